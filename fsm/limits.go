package fsm

import (
	"fmt"
	"net"
	"strconv"
	"unicode/utf8"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
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
	// MaxNodeIDBytes bounds a node id. Node ids are bbolt keys, Raft server
	// ids, metric labels and table cells: short and plain.
	MaxNodeIDBytes = 64
	// MaxAddrBytes bounds an advertised address (host:port).
	MaxAddrBytes = 256
	// MaxReplicas bounds the replicas of one group in a shard map.
	MaxReplicas = 7
	// MaxGroups bounds the data groups of a shard map: every group owns at
	// least one slot.
	MaxGroups = shard.SlotCount
)

// ValidateTimelineID checks a timeline id: non-empty, valid UTF-8, at most
// MaxTimelineIDBytes.
func ValidateTimelineID(id string) error {
	switch limit := idLimit(id); {
	case id == "":
		return fmt.Errorf("%w: timeline id is empty", ErrInvalidArgument)
	case len(id) > limit:
		return fmt.Errorf("%w: timeline id is %d bytes; the limit is %d", ErrInvalidArgument, len(id), limit)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: timeline id is not valid UTF-8", ErrInvalidArgument)
	}
	return nil
}

// idLimit is the longest an id may be: MaxTimelineIDBytes, plus the
// prefix of a derived id (whose user part has that limit).
func idLimit(id string) int { return MaxTimelineIDBytes + shard.DerivedPrefixLen(id) }

// validateWritable checks an id a client command writes to: a valid id
// and not a derived one (devices/, conversations/, device-events/), which
// only the state machine writes, so that no client can forge a kick event
// or an unread count.
func validateWritable(id string, validate func(string) error) error {
	if err := validate(id); err != nil {
		return err
	}
	if shard.IsDerived(id) {
		return fmt.Errorf("%w: %q is kept by the server (ids starting with %q, %q or %q are derived from a user's sessions and deliveries, never written by a client)",
			ErrInvalidArgument, truncate(id), shard.DevicesPrefix, shard.ConversationsPrefix, shard.DeviceEventsPrefix)
	}
	return nil
}

// ValidateAppend checks an Append against the fixed limits.
func ValidateAppend(a *fsmpb.Append) error {
	if err := validateWritable(a.GetTimeline(), ValidateTimelineID); err != nil {
		return err
	}
	if a.GetDedupeWindowMs() < 0 {
		return fmt.Errorf("%w: negative dedupe window", ErrInvalidArgument)
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
	if err := validateWritable(s.GetConversation(), ValidateTimelineID); err != nil {
		return fmt.Errorf("conversation: %w", err)
	}
	if err := validateWritable(s.GetSender(), ValidateTimelineID); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	if n := len(s.GetRecipients()); n >= MaxRecipients {
		return fmt.Errorf("%w: %d recipients; the limit is %d, the sender included", ErrInvalidArgument, n, MaxRecipients)
	}
	if s.GetSender() == s.GetConversation() {
		return fmt.Errorf("%w: the sender %q is the conversation itself", ErrInvalidArgument, truncate(s.GetSender()))
	}
	for i, r := range s.GetRecipients() {
		if err := validateWritable(r, ValidateTimelineID); err != nil {
			return fmt.Errorf("recipient %d: %w", i, err)
		}
		if r == s.GetConversation() {
			return fmt.Errorf("%w: recipient %d is the conversation itself; members are user timelines", ErrInvalidArgument, i)
		}
	}
	if s.GetDedupeWindowMs() < 0 {
		return fmt.Errorf("%w: negative dedupe window", ErrInvalidArgument)
	}
	return validateEntryFields(s.GetPayload(), s.GetIdempotencyKey(), s.GetDedupeWindowMs(), s.GetMetadata())
}

// ValidateDeliver checks a Deliver against the fixed limits.
func ValidateDeliver(d *fsmpb.Deliver) error {
	if n := len(d.GetItems()); n == 0 || n > MaxDeliveryItems {
		return fmt.Errorf("%w: %d delivery items; 1..%d allowed", ErrInvalidArgument, n, MaxDeliveryItems)
	}
	for i, it := range d.GetItems() {
		if err := validateWritable(it.GetTimeline(), ValidateTimelineID); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		if err := validateWritable(it.GetConversation(), ValidateTimelineID); err != nil {
			return fmt.Errorf("item %d: conversation: %w", i, err)
		}
		if s := it.GetSender(); s != "" {
			if err := ValidateTimelineID(s); err != nil {
				return fmt.Errorf("item %d: sender: %w", i, err)
			}
		}
		if it.GetTimeline() == it.GetConversation() {
			return fmt.Errorf("%w: item %d delivers conversation %q into itself", ErrInvalidArgument, i, truncate(it.GetConversation()))
		}
		if it.GetConversationSeq() == 0 {
			return fmt.Errorf("%w: item %d has no conversation seq", ErrInvalidArgument, i)
		}
		if it.GetDeliverySeq() == 0 {
			return fmt.Errorf("%w: item %d has no delivery seq", ErrInvalidArgument, i)
		}
		if err := validateEntryFields(it.GetPayload(), "", 0, it.GetMetadata()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
	}
	return nil
}

// ValidateNodeID checks a node id: 1..MaxNodeIDBytes of ASCII letters,
// digits, '.', '_' and '-'.
func ValidateNodeID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: node id is empty", ErrInvalidArgument)
	case len(id) > MaxNodeIDBytes:
		return fmt.Errorf("%w: node id is %d bytes; the limit is %d", ErrInvalidArgument, len(id), MaxNodeIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isIDByte(c) {
			return fmt.Errorf("%w: node id %q has %q at byte %d; allowed are letters, digits, '.', '_' and '-'", ErrInvalidArgument, truncate(id), c, i)
		}
	}
	return nil
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidateAddr checks an address other nodes dial: host:port with a
// non-empty host (a name or an IP literal) and a port in 1..65535. what
// names the address in the message ("raft address").
func ValidateAddr(what, addr string) error {
	if len(addr) > MaxAddrBytes {
		return fmt.Errorf("%w: %s is %d bytes; the limit is %d", ErrInvalidArgument, what, len(addr), MaxAddrBytes)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not host:port: %v", ErrInvalidArgument, what, truncate(addr), err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: %s %q: port must be 1..65535", ErrInvalidArgument, what, truncate(addr))
	}
	if host == "" {
		return fmt.Errorf("%w: %s %q has no host: other nodes could not dial it", ErrInvalidArgument, what, truncate(addr))
	}
	if net.ParseIP(host) == nil && !isHostname(host) {
		return fmt.Errorf("%w: %s %q: host is neither an IP address nor a host name", ErrInvalidArgument, what, truncate(addr))
	}
	return nil
}

// isHostname accepts DNS-style names: dot-separated labels of letters,
// digits, '-' and '_', each 1..63 bytes.
func isHostname(h string) bool {
	label := 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0 || len(h) > 1 // "name." is fine, "." is not
}

// ValidateRegisterNode checks a node registration: a valid id and raft
// address; the gRPC and gossip addresses may be empty (not known yet).
func ValidateRegisterNode(r *fsmpb.RegisterNode) error {
	if err := ValidateNodeID(r.GetNodeId()); err != nil {
		return err
	}
	if err := ValidateAddr("raft address", r.GetRaftAddr()); err != nil {
		return err
	}
	for _, a := range []struct{ what, addr string }{{"gRPC address", r.GetGrpcAddr()}, {"gossip address", r.GetGossipAddr()}} {
		if a.addr == "" {
			continue
		}
		if err := ValidateAddr(a.what, a.addr); err != nil {
			return err
		}
	}
	return nil
}

// ValidateShardMap checks a proposed shard map beyond what shard.New checks
// (every slot owned once): bounded counts and valid node ids.
func ValidateShardMap(pb *fsmpb.ShardMap) error {
	if pb.GetVersion() == 0 {
		return fmt.Errorf("%w: shard map version 0", ErrInvalidArgument)
	}
	if n := len(pb.GetGroups()); n == 0 || n > MaxGroups {
		return fmt.Errorf("%w: shard map has %d groups; 1..%d allowed", ErrInvalidArgument, n, MaxGroups)
	}
	for _, g := range pb.GetGroups() {
		if n := len(g.GetReplicas()); n == 0 || n > MaxReplicas {
			return fmt.Errorf("%w: group %d has %d replicas; 1..%d allowed", ErrInvalidArgument, g.GetId(), n, MaxReplicas)
		}
		// A group may own no slots: a new one before moves give it some,
		// or one whose slots all moved away.
		if n := len(g.GetRanges()); n > shard.SlotCount {
			return fmt.Errorf("%w: group %d has %d slot ranges; at most %d allowed", ErrInvalidArgument, g.GetId(), n, shard.SlotCount)
		}
		for _, r := range g.GetReplicas() {
			if err := ValidateNodeID(r); err != nil {
				return fmt.Errorf("group %d replica: %w", g.GetId(), err)
			}
		}
		if c := g.GetCreator(); c != "" {
			if err := ValidateNodeID(c); err != nil {
				return fmt.Errorf("group %d creator: %w", g.GetId(), err)
			}
		}
	}
	return nil
}

// ValidateSetRanges checks a group's owned slot ranges: within the slot
// space, each non-empty, none overlapping.
func ValidateSetRanges(c *fsmpb.SetRanges) error {
	if c.GetMapVersion() == 0 {
		return fmt.Errorf("%w: ranges of shard map version 0", ErrInvalidArgument)
	}
	return validateSlotRanges("set ranges", c.GetRanges(), true)
}

// ValidateDeliveryDone checks a DeliveryDone.
func ValidateDeliveryDone(d *fsmpb.DeliveryDone) error {
	if err := ValidateTimelineID(d.GetConversation()); err != nil {
		return fmt.Errorf("conversation: %w", err)
	}
	if d.GetConversationSeq() == 0 {
		return fmt.Errorf("%w: delivery done without a conversation seq", ErrInvalidArgument)
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
		if it.GetKeepFrom() == 0 {
			return fmt.Errorf("%w: trim item %d keeps from seq 0", ErrInvalidArgument, i)
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
