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
	// MaxRecipients bounds the members one Send delivers to (the sender
	// included).
	MaxRecipients = 10000
	// MaxDeliveryItems bounds the items of one Deliver command.
	MaxDeliveryItems = 1000
	// MaxTrimItems bounds the timelines one Trim command names.
	MaxTrimItems = 1000
	// MaxTrimPerItem bounds the entries one Trim item drops, so a command
	// stays small; the leader proposes again for the rest.
	MaxTrimPerItem = 10000
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
	return validateEntryFields(a.GetPayload(), a.GetIdempotencyKey(), a.GetDedupeWindowMs(), a.GetMetadata())
}

// validateEntryFields checks what every kind of entry carries.
func validateEntryFields(payload []byte, key string, windowMs int64, metadata map[string]string) error {
	if n := len(payload); n > MaxPayloadBytes {
		return fmt.Errorf("%w: payload is %d bytes; the limit is %d", ErrInvalidArgument, n, MaxPayloadBytes)
	}
	if n := len(key); n > MaxIdempotencyKeyBytes {
		return fmt.Errorf("%w: idempotency key is %d bytes; the limit is %d", ErrInvalidArgument, n, MaxIdempotencyKeyBytes)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: idempotency key is not valid UTF-8", ErrInvalidArgument)
	}
	if key != "" && windowMs <= 0 {
		return fmt.Errorf("%w: an idempotency key needs a positive dedupe window", ErrInvalidArgument)
	}
	if n := len(metadata); n > MaxMetadataPairs {
		return fmt.Errorf("%w: metadata has %d pairs; the limit is %d", ErrInvalidArgument, n, MaxMetadataPairs)
	}
	for k, v := range metadata {
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

// ValidateSend checks a Send against the fixed limits.
func ValidateSend(s *fsmpb.Send) error {
	if err := ValidateTimelineID(s.GetConversation()); err != nil {
		return fmt.Errorf("conversation: %w", err)
	}
	if err := ValidateTimelineID(s.GetSender()); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	if n := len(s.GetRecipients()); n >= MaxRecipients {
		return fmt.Errorf("%w: %d recipients; the limit is %d, the sender included", ErrInvalidArgument, n, MaxRecipients)
	}
	for i, r := range s.GetRecipients() {
		if err := ValidateTimelineID(r); err != nil {
			return fmt.Errorf("recipient %d: %w", i, err)
		}
	}
	return validateEntryFields(s.GetPayload(), s.GetIdempotencyKey(), s.GetDedupeWindowMs(), s.GetMetadata())
}

// ValidateDeliver checks a Deliver against the fixed limits.
func ValidateDeliver(d *fsmpb.Deliver) error {
	if n := len(d.GetItems()); n == 0 || n > MaxDeliveryItems {
		return fmt.Errorf("%w: %d delivery items; 1..%d allowed", ErrInvalidArgument, n, MaxDeliveryItems)
	}
	for i, it := range d.GetItems() {
		if err := ValidateTimelineID(it.GetTimeline()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		if err := ValidateTimelineID(it.GetConversation()); err != nil {
			return fmt.Errorf("item %d: conversation: %w", i, err)
		}
		if it.GetConversationSeq() == 0 {
			return fmt.Errorf("%w: item %d has no conversation seq", ErrInvalidArgument, i)
		}
		if err := validateEntryFields(it.GetPayload(), "", 0, it.GetMetadata()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
	}
	return nil
}

// ValidateTrim checks a Trim against the fixed limits.
func ValidateTrim(t *fsmpb.Trim) error {
	if n := len(t.GetItems()); n == 0 || n > MaxTrimItems {
		return fmt.Errorf("%w: %d trim items; 1..%d allowed", ErrInvalidArgument, n, MaxTrimItems)
	}
	for i, it := range t.GetItems() {
		if err := ValidateTimelineID(it.GetTimeline()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
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
