package fsm

import (
	"fmt"
	"unicode/utf8"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Limits of collections, enforced by every replica at apply (fixed, like
// the timeline limits: replicas with different limits would diverge).
const (
	// MaxCollectionIDBytes bounds a collection id (UTF-8, non-empty).
	MaxCollectionIDBytes = MaxTimelineIDBytes
	// MaxRecordKeyBytes bounds a record key (UTF-8, non-empty).
	MaxRecordKeyBytes = 256
	// MaxRecordValueBytes bounds a record value.
	MaxRecordValueBytes = 64 << 10
	// MaxRecordOps bounds the operations of one write, and its conditions.
	MaxRecordOps = 256
	// MaxCompactItems bounds the collections one CompactTombstones names.
	MaxCompactItems = 1000
	// MaxCompactScan bounds the version-index keys one compaction item
	// reads; the leader proposes again for the rest.
	MaxCompactScan = 10000
)

// ValidateCollectionID checks a collection id: non-empty, valid UTF-8, at
// most MaxCollectionIDBytes.
func ValidateCollectionID(id string) error {
	switch limit := idLimit(id); {
	case id == "":
		return fmt.Errorf("%w: collection id is empty", ErrInvalidArgument)
	case len(id) > limit:
		return fmt.Errorf("%w: collection id is %d bytes; the limit is %d", ErrInvalidArgument, len(id), limit)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: collection id is not valid UTF-8", ErrInvalidArgument)
	}
	return nil
}

// ValidateRecordKey checks a record key: non-empty, valid UTF-8, at most
// MaxRecordKeyBytes.
func ValidateRecordKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: record key is empty", ErrInvalidArgument)
	case len(key) > MaxRecordKeyBytes:
		return fmt.Errorf("%w: record key %q is %d bytes; the limit is %d", ErrInvalidArgument, truncate(key), len(key), MaxRecordKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: record key is not valid UTF-8", ErrInvalidArgument)
	}
	return nil
}

// ValidateRecordWrite checks a RecordWrite against the fixed limits.
func ValidateRecordWrite(w *fsmpb.RecordWrite) error {
	if err := validateWritable(w.GetCollection(), ValidateCollectionID); err != nil {
		return err
	}
	ops := w.GetOps()
	if len(ops) == 0 || len(ops) > MaxRecordOps {
		return fmt.Errorf("%w: a write has %d operations; 1..%d allowed", ErrInvalidArgument, len(ops), MaxRecordOps)
	}
	seen := make(map[string]bool, len(ops))
	for i, op := range ops {
		if err := validateRecordState(op.GetKey(), op.GetDelete(), op.GetValue(), op.GetMetadata()); err != nil {
			return fmt.Errorf("operation %d: %w", i, err)
		}
		if seen[op.GetKey()] {
			return fmt.Errorf("%w: key %q appears twice in one write", ErrInvalidArgument, truncate(op.GetKey()))
		}
		seen[op.GetKey()] = true
	}
	conds := w.GetConditions()
	if len(conds) > MaxRecordOps {
		return fmt.Errorf("%w: a write has %d conditions; the limit is %d", ErrInvalidArgument, len(conds), MaxRecordOps)
	}
	seenCond := make(map[string]bool, len(conds))
	for i, c := range conds {
		if err := ValidateRecordKey(c.GetKey()); err != nil {
			return fmt.Errorf("condition %d: %w", i, err)
		}
		if seenCond[c.GetKey()] {
			return fmt.Errorf("%w: key %q has two conditions", ErrInvalidArgument, truncate(c.GetKey()))
		}
		seenCond[c.GetKey()] = true
	}
	if w.GetExpectedVersion() != 0 && !w.GetHasExpectedVersion() {
		return fmt.Errorf("%w: expected_version without has_expected_version", ErrInvalidArgument)
	}
	if w.GetDedupeWindowMs() < 0 {
		return fmt.Errorf("%w: negative dedupe window", ErrInvalidArgument)
	}
	if err := validateCopies(w); err != nil {
		return err
	}
	return validateEntryFields(nil, w.GetIdempotencyKey(), w.GetDedupeWindowMs(), nil)
}

// validateRecordState checks what a record is set to, by a write or a
// copy: its key, and a value within the limit or a deletion with none.
func validateRecordState(key string, deleted bool, value []byte, metadata map[string]string) error {
	if err := ValidateRecordKey(key); err != nil {
		return err
	}
	if deleted && (len(value) > 0 || len(metadata) > 0) {
		return fmt.Errorf("%w: a delete of %q carries a value or metadata", ErrInvalidArgument, truncate(key))
	}
	if n := len(value); n > MaxRecordValueBytes {
		return fmt.Errorf("%w: the value of %q is %d bytes; the limit is %d", ErrInvalidArgument, truncate(key), n, MaxRecordValueBytes)
	}
	return validateEntryFields(nil, "", 0, metadata)
}

// ValidateCompactTombstones checks a CompactTombstones command.
func ValidateCompactTombstones(c *fsmpb.CompactTombstones) error {
	if n := len(c.GetItems()); n == 0 || n > MaxCompactItems {
		return fmt.Errorf("%w: %d compaction items; 1..%d allowed", ErrInvalidArgument, n, MaxCompactItems)
	}
	for i, it := range c.GetItems() {
		if err := ValidateCollectionID(it.GetCollection()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
	}
	return nil
}
