package fsm

import (
	"fmt"
	"unicode/utf8"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Limits every replica enforces when it applies a command. They are fixed
// (not configuration) because replicas with different limits would diverge.
// The node enforces its own, configurable and lower, limits before proposing.
const (
	// MaxTimelineIDBytes bounds a timeline id (UTF-8, non-empty).
	MaxTimelineIDBytes = 256
	// MaxIdempotencyKeyBytes bounds an idempotency key.
	MaxIdempotencyKeyBytes = 128
	// MaxMetadataPairs bounds the metadata map of one entry.
	MaxMetadataPairs = 32
	// MaxMetadataKeyBytes bounds one metadata key.
	MaxMetadataKeyBytes = 128
	// MaxMetadataValueBytes bounds one metadata value.
	MaxMetadataValueBytes = 1024
	// MaxPayloadBytes is the hard ceiling of a payload; the node's configured
	// limit (1 MiB by default) must not exceed it.
	MaxPayloadBytes = 16 << 20
)

// ValidateTimelineID checks a timeline id: non-empty, valid UTF-8, at most
// MaxTimelineIDBytes.
func ValidateTimelineID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: timeline id is empty", ErrInvalidArgument)
	case len(id) > MaxTimelineIDBytes:
		return fmt.Errorf("%w: timeline id is %d bytes; the limit is %d", ErrInvalidArgument, len(id), MaxTimelineIDBytes)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: timeline id is not valid UTF-8", ErrInvalidArgument)
	}
	return nil
}

// ValidateAppend checks an Append against the fixed limits.
func ValidateAppend(a *fsmpb.Append) error {
	if err := ValidateTimelineID(a.GetTimeline()); err != nil {
		return err
	}
	if n := len(a.GetPayload()); n > MaxPayloadBytes {
		return fmt.Errorf("%w: payload is %d bytes; the limit is %d", ErrInvalidArgument, n, MaxPayloadBytes)
	}
	if n := len(a.GetIdempotencyKey()); n > MaxIdempotencyKeyBytes {
		return fmt.Errorf("%w: idempotency key is %d bytes; the limit is %d", ErrInvalidArgument, n, MaxIdempotencyKeyBytes)
	}
	if !utf8.ValidString(a.GetIdempotencyKey()) {
		return fmt.Errorf("%w: idempotency key is not valid UTF-8", ErrInvalidArgument)
	}
	if a.GetIdempotencyKey() != "" && a.GetDedupeWindowMs() <= 0 {
		return fmt.Errorf("%w: an idempotency key needs a positive dedupe window", ErrInvalidArgument)
	}
	if n := len(a.GetMetadata()); n > MaxMetadataPairs {
		return fmt.Errorf("%w: metadata has %d pairs; the limit is %d", ErrInvalidArgument, n, MaxMetadataPairs)
	}
	for k, v := range a.GetMetadata() {
		if k == "" || len(k) > MaxMetadataKeyBytes {
			return fmt.Errorf("%w: metadata key %q must be 1..%d bytes", ErrInvalidArgument, truncate(k), MaxMetadataKeyBytes)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata key %q or its value is not valid UTF-8", ErrInvalidArgument, truncate(k))
		}
		if len(v) > MaxMetadataValueBytes {
			return fmt.Errorf("%w: metadata value of %q is %d bytes; the limit is %d", ErrInvalidArgument, truncate(k), len(v), MaxMetadataValueBytes)
		}
	}
	return nil
}

func truncate(s string) string {
	const n = 32
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
