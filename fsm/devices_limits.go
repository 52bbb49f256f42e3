package fsm

import (
	"fmt"
	"unicode/utf8"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Limits of device sessions, enforced by every replica at apply.
const (
	// MaxDeviceIDBytes bounds a device id and a session id.
	MaxDeviceIDBytes = 128
	// MaxDeviceClassBytes bounds a device class and a class group name.
	MaxDeviceClassBytes = 32
	// MaxDeviceClasses bounds the classes of a login policy.
	MaxDeviceClasses = 32
	// MaxActiveSessions bounds a user's active sessions whatever the
	// policy: a login past it is refused (ErrTooManySessions).
	MaxActiveSessions = 64
	// MaxEndedSessions is how many of the newest ended sessions Devices
	// lists (ValidateSession answers for every one ended within
	// EndedSessionMemoryMs).
	MaxEndedSessions = 16
	// MaxTouchItems bounds the devices of one TouchDevices command.
	MaxTouchItems = 1000
	// unreadGCPerCommand bounds how many spent unread-index keys one
	// delivery or mark removes.
	unreadGCPerCommand = 1000
)

// validateName checks a non-empty UTF-8 name of at most limit bytes.
func validateName(what, v string, limit int) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalidArgument, what)
	case len(v) > limit:
		return fmt.Errorf("%w: %s is %d bytes; the limit is %d", ErrInvalidArgument, what, len(v), limit)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidArgument, what)
	}
	return nil
}

// ValidateUser checks a user id: a timeline id that is not derived.
func ValidateUser(user string) error {
	if err := validateWritable(user, ValidateTimelineID); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	return nil
}

// ValidateDeviceID checks a device id.
func ValidateDeviceID(id string) error { return validateName("device id", id, MaxDeviceIDBytes) }

// ValidateSessionID checks a session id.
func ValidateSessionID(id string) error { return validateName("session id", id, MaxDeviceIDBytes) }

// ValidateLoginPolicy checks a policy: named groups, each class in exactly
// one group.
func ValidateLoginPolicy(p *fsmpb.LoginPolicy) error {
	if len(p.GetGroups()) == 0 {
		return fmt.Errorf("%w: the login policy has no class groups", ErrInvalidArgument)
	}
	classes, names := map[string]bool{}, map[string]bool{}
	for _, g := range p.GetGroups() {
		if err := validateName("class group name", g.GetName(), MaxDeviceClassBytes); err != nil {
			return err
		}
		if names[g.GetName()] {
			return fmt.Errorf("%w: class group %q appears twice", ErrInvalidArgument, g.GetName())
		}
		names[g.GetName()] = true
		if len(g.GetClasses()) == 0 {
			return fmt.Errorf("%w: class group %q has no classes", ErrInvalidArgument, g.GetName())
		}
		if g.GetLimit() > MaxActiveSessions {
			return fmt.Errorf("%w: class group %q has limit %d; at most %d (0: no limit)", ErrInvalidArgument, g.GetName(), g.GetLimit(), MaxActiveSessions)
		}
		for _, c := range g.GetClasses() {
			if err := validateName("device class", c, MaxDeviceClassBytes); err != nil {
				return err
			}
			if classes[c] {
				return fmt.Errorf("%w: device class %q is in two class groups", ErrInvalidArgument, c)
			}
			classes[c] = true
		}
	}
	if len(classes) > MaxDeviceClasses {
		return fmt.Errorf("%w: the login policy has %d classes; the limit is %d", ErrInvalidArgument, len(classes), MaxDeviceClasses)
	}
	return nil
}

// ValidateLogin checks a Login: its ids, its policy, and that the policy
// knows its class.
func ValidateLogin(l *fsmpb.Login) error {
	if err := ValidateUser(l.GetUser()); err != nil {
		return err
	}
	if err := ValidateDeviceID(l.GetDeviceId()); err != nil {
		return err
	}
	if err := ValidateSessionID(l.GetSessionId()); err != nil {
		return err
	}
	if err := validateName("device class", l.GetDeviceClass(), MaxDeviceClassBytes); err != nil {
		return err
	}
	if err := ValidateLoginPolicy(l.GetPolicy()); err != nil {
		return err
	}
	if classGroup(l.GetPolicy(), l.GetDeviceClass()) == nil {
		return fmt.Errorf("%w: unknown device class %q (the policy knows %v)", ErrInvalidArgument, l.GetDeviceClass(), policyClasses(l.GetPolicy()))
	}
	return validateEntryFields(nil, "", 0, l.GetMetadata())
}

// ValidateAckCursor checks an AckCursor: the timeline must be one of the
// user's own (the user timeline or its device-events timeline).
func ValidateAckCursor(a *fsmpb.AckCursor) error {
	if err := ValidateUser(a.GetUser()); err != nil {
		return err
	}
	if err := ValidateDeviceID(a.GetDeviceId()); err != nil {
		return err
	}
	if !isUserTimeline(a.GetUser(), a.GetTimeline()) {
		return fmt.Errorf("%w: timeline %q is not one of user %q's timelines (%q or %q)", ErrInvalidArgument, truncate(a.GetTimeline()), truncate(a.GetUser()), truncate(a.GetUser()), truncate(userTimelines(a.GetUser())[1]))
	}
	return nil
}

// ValidateMarkRead checks a MarkRead.
func ValidateMarkRead(m *fsmpb.MarkRead) error {
	if err := ValidateUser(m.GetUser()); err != nil {
		return err
	}
	if err := validateWritable(m.GetConversation(), ValidateTimelineID); err != nil {
		return fmt.Errorf("conversation: %w", err)
	}
	if m.GetConversation() == m.GetUser() {
		return fmt.Errorf("%w: the conversation is the user's own timeline", ErrInvalidArgument)
	}
	return nil
}

// ValidateTouchDevices checks a TouchDevices command.
func ValidateTouchDevices(t *fsmpb.TouchDevices) error {
	if n := len(t.GetItems()); n == 0 || n > MaxTouchItems {
		return fmt.Errorf("%w: %d devices to touch; 1..%d allowed", ErrInvalidArgument, n, MaxTouchItems)
	}
	for i, it := range t.GetItems() {
		if err := ValidateUser(it.GetUser()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		if err := ValidateDeviceID(it.GetDeviceId()); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
	}
	return nil
}

// ValidateLogout checks a Logout.
func ValidateLogout(l *fsmpb.Logout) error {
	if err := ValidateUser(l.GetUser()); err != nil {
		return err
	}
	return ValidateSessionID(l.GetSessionId())
}

func classGroup(p *fsmpb.LoginPolicy, class string) *fsmpb.ClassGroup {
	for _, g := range p.GetGroups() {
		for _, c := range g.GetClasses() {
			if c == class {
				return g
			}
		}
	}
	return nil
}

func policyClasses(p *fsmpb.LoginPolicy) []string {
	var out []string
	for _, g := range p.GetGroups() {
		out = append(out, g.GetClasses()...)
	}
	return out
}
