package fsm

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Limits of record copies.
const (
	// MaxCopyTargets bounds the target collections of one write's copies,
	// all copies together.
	MaxCopyTargets = 10000
	// MaxCopyItems bounds the items of one CopyRecords command.
	MaxCopyItems = 1000
)

// CopyResult is the outcome of a CopyRecords: copies written, and copies
// skipped because the target had that source version (or a newer one).
type CopyResult struct{ Written, Skipped int }

func copyMarkKey(ck []byte, source, key string) []byte {
	suffix := binary.BigEndian.AppendUint16(nil, uint16(len(source)))
	suffix = append(append(suffix, source...), key...)
	return kindKey(ck, collKindCopyMark, suffix)
}

func recordOutboxKey(source string, version uint64) []byte {
	return binary.BigEndian.AppendUint64(collectionKey(source), version)
}

// validateCopies checks a write's copies: each names a key the write sets,
// a target key, and targets other than the source, within the limits.
func validateCopies(w *fsmpb.RecordWrite) error {
	written := map[string]bool{}
	for _, op := range w.GetOps() {
		written[op.GetKey()] = true
	}
	targets := 0
	for i, c := range w.GetCopies() {
		if !written[c.GetKey()] {
			return fmt.Errorf("%w: copy %d names key %q, which the write does not set", ErrInvalidArgument, i, truncate(c.GetKey()))
		}
		if err := ValidateRecordKey(c.GetTargetKey()); err != nil {
			return fmt.Errorf("copy %d target key: %w", i, err)
		}
		if len(c.GetTargets()) == 0 {
			return fmt.Errorf("%w: copy %d has no targets", ErrInvalidArgument, i)
		}
		seen := make(map[string]bool, len(c.GetTargets()))
		for j, t := range c.GetTargets() {
			if err := validateWritable(t, ValidateCollectionID); err != nil {
				return fmt.Errorf("copy %d target %d: %w", i, j, err)
			}
			if t == w.GetCollection() {
				return fmt.Errorf("%w: copy %d targets the collection it copies from", ErrInvalidArgument, i)
			}
			if seen[t] {
				return fmt.Errorf("%w: copy %d names target %q twice", ErrInvalidArgument, i, truncate(t))
			}
			seen[t] = true
		}
		if targets += len(c.GetTargets()); targets > MaxCopyTargets {
			return fmt.Errorf("%w: the copies name more than %d targets", ErrInvalidArgument, MaxCopyTargets)
		}
	}
	return nil
}

// queueCopies stores the copy job of a write at version, in the write's
// transaction: the copies are as durable as the write.
func queueCopies(root *bolt.Bucket, ch *Changes, w *fsmpb.RecordWrite, version uint64) error {
	if len(w.GetCopies()) == 0 {
		return nil
	}
	ops := map[string]*fsmpb.RecordOp{}
	for _, op := range w.GetOps() {
		ops[op.GetKey()] = op
	}
	job := &fsmpb.CopyJob{Source: w.GetCollection(), Version: version}
	for _, c := range w.GetCopies() {
		op := ops[c.GetKey()]
		job.Items = append(job.Items, &fsmpb.CopyJobItem{
			TargetKey: c.GetTargetKey(), Deleted: op.GetDelete(), Value: op.GetValue(), Metadata: op.GetMetadata(), Targets: c.GetTargets(),
		})
	}
	v, err := stored.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode copy job: %w", err)
	}
	ch.Copies = true
	return sealed{root.Bucket(bucketRecordOutbox)}.Put(recordOutboxKey(w.GetCollection(), version), v)
}

// ValidateCopyRecords checks a CopyRecords command.
func ValidateCopyRecords(c *fsmpb.CopyRecords) error {
	if n := len(c.GetItems()); n == 0 || n > MaxCopyItems {
		return fmt.Errorf("%w: %d copy items; 1..%d allowed", ErrInvalidArgument, n, MaxCopyItems)
	}
	for i, it := range c.GetItems() {
		if err := validateWritable(it.GetCollection(), ValidateCollectionID); err != nil {
			return fmt.Errorf("copy item %d: %w", i, err)
		}
		if err := validateRecordState(it.GetKey(), it.GetDeleted(), it.GetValue(), it.GetMetadata()); err != nil {
			return fmt.Errorf("copy item %d: %w", i, err)
		}
		if err := ValidateCollectionID(it.GetSource()); err != nil {
			return fmt.Errorf("copy item %d source: %w", i, err)
		}
		if it.GetSourceVersion() == 0 {
			return fmt.Errorf("%w: copy item %d has no source version", ErrInvalidArgument, i)
		}
	}
	return nil
}

// applyCopyRecords writes each copy into its target collection as a write
// of its own (the target's version advances by one), unless the target
// already has that source version of the key or a newer one. The whole
// command is refused when a target is not this group's.
func applyCopyRecords(root *bolt.Bucket, ch *Changes, nowMs int64, c *fsmpb.CopyRecords) (*CopyResult, error) {
	if err := ValidateCopyRecords(c); err != nil {
		return nil, reject(err)
	}
	for _, it := range c.GetItems() {
		if err := checkOwned(root, it.GetCollection()); err != nil {
			return nil, err
		}
	}
	cb := sealed{root.Bucket(bucketCollections)}
	res := &CopyResult{}
	for _, it := range c.GetItems() {
		ck := collectionKey(it.GetCollection())
		mk := copyMarkKey(ck, it.GetSource(), it.GetKey())
		mark, err := cb.GetU64(mk)
		if err != nil {
			return nil, err
		}
		if it.GetSourceVersion() <= mark {
			res.Skipped++
			continue
		}
		info, err := readCollInfo(cb, ck)
		if err != nil {
			return nil, err
		}
		info.Version++
		op := &fsmpb.RecordOp{Key: it.GetKey(), Delete: it.GetDeleted(), Value: it.GetValue(), Metadata: it.GetMetadata()}
		if err := writeRecord(cb, ck, info, nowMs, op); err != nil {
			return nil, err
		}
		if err := writeCollInfo(cb, ck, info); err != nil {
			return nil, err
		}
		if err := cb.Put(mk, u64(it.GetSourceVersion())); err != nil {
			return nil, err
		}
		ch.collectionMoved(it.GetCollection(), info.GetVersion())
		res.Written++
	}
	return res, nil
}

func applyCopyDone(root *bolt.Bucket, d *fsmpb.CopyDone) error {
	if err := ValidateCollectionID(d.GetSource()); err != nil {
		return reject(err)
	}
	if err := checkOwned(root, d.GetSource()); err != nil {
		return err
	}
	return sealed{root.Bucket(bucketRecordOutbox)}.Delete(recordOutboxKey(d.GetSource(), d.GetVersion()))
}

// CopyJobs lists up to limit copy jobs, by source collection and then in
// version order.
func (f *FSM) CopyJobs(limit int) ([]*fsmpb.CopyJob, error) {
	var out []*fsmpb.CopyJob
	err := f.view(func(root *bolt.Bucket) error {
		c := root.Bucket(bucketRecordOutbox).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			raw, err := unseal(k, v)
			if err != nil {
				return err
			}
			var job fsmpb.CopyJob
			if err := proto.Unmarshal(raw, &job); err != nil {
				return fmt.Errorf("%w: decode copy job %x: %v", ErrCorruptState, k, err)
			}
			out = append(out, &job)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: copy jobs: %w", err)
	}
	return out, nil
}
