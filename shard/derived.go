package shard

import "strings"

// Derived ids: what the store keeps about a user under names of its own,
// placed on the user's slot so that the user's group applies them in the
// same transaction as the data they derive from (a delivery updates the
// user's conversation list; a login writes the device list and the kick
// events). SlotOf(prefix + id) == SlotOf(id) for every prefix below, however
// many are stacked.
const (
	// DevicesPrefix + user is the user's device list (a collection).
	DevicesPrefix = "devices/"
	// ConversationsPrefix + user is the user's conversation list (a
	// collection): per conversation its last message and unread count.
	ConversationsPrefix = "conversations/"
	// DeviceEventsPrefix + user is the timeline of the user's session
	// events (a session ended: logout, replaced, kicked by the policy).
	DeviceEventsPrefix = "device-events/"
)

var derivedPrefixes = []string{DevicesPrefix, ConversationsPrefix, DeviceEventsPrefix}

// DevicesCollection is the id of a user's device list.
func DevicesCollection(user string) string { return DevicesPrefix + user }

// ConversationsCollection is the id of a user's conversation list.
func ConversationsCollection(user string) string { return ConversationsPrefix + user }

// DeviceEventsTimeline is the id of a user's session-event timeline.
func DeviceEventsTimeline(user string) string { return DeviceEventsPrefix + user }

// IsDerived reports whether id names state the store derives for a user
// (written by the state machine only, never by a client).
func IsDerived(id string) bool {
	_, ok := derivedPrefix(id)
	return ok
}

// DerivedPrefixLen is the length of id's derived prefix (0: none).
func DerivedPrefixLen(id string) int {
	p, _ := derivedPrefix(id)
	return len(p)
}

func derivedPrefix(id string) (string, bool) {
	for _, p := range derivedPrefixes {
		if len(id) > len(p) && strings.HasPrefix(id, p) {
			return p, true
		}
	}
	return "", false
}

// hashedPart is the part of id SlotOf hashes: id without its derived
// prefixes.
func hashedPart(id string) string {
	for {
		p, ok := derivedPrefix(id)
		if !ok {
			return id
		}
		id = id[len(p):]
	}
}
