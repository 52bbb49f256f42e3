package fsm

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/seqgen"
	"github.com/syncstore/syncstore/shard"
)

// Cursor is how far a device has synced one timeline, and how far behind
// the head that is.
type Cursor struct {
	Timeline string
	Seq      uint64
	Head     uint64
}

// Lag is how many entries the device has not acknowledged.
func (c Cursor) Lag() uint64 { return c.Head - min(c.Seq, c.Head) }

// Device is an active session with its device's cursors.
type Device struct {
	Session
	Cursors []Cursor
}

// UserDevices is a user's sessions as the local replica has them.
type UserDevices struct {
	// Epoch is the last epoch given to a session.
	Epoch uint64
	// Active sessions with their cursors, in epoch order.
	Active []Device
	// Ended: the MaxEndedSessions most recently ended sessions, in the
	// order they ended.
	Ended []Session
}

// Devices reads a user's sessions and cursors from the local replica.
func (f *FSM) Devices(user string) (UserDevices, error) {
	if err := ValidateUser(user); err != nil {
		return UserDevices{}, err
	}
	var out UserDevices
	err := f.view(func(root *bolt.Bucket) error {
		db := sealed{root.Bucket(bucketDevices)}
		uk := timelineKey(user)
		ds, err := readSessions(db, uk)
		if err != nil {
			return err
		}
		out.Epoch = ds.GetEpoch()
		if out.Ended, err = recentlyEnded(db, uk, MaxEndedSessions); err != nil {
			return err
		}
		for _, s := range ds.GetSessions() {
			cs, err := readCursors(root, db, user, s.GetDeviceId())
			if err != nil {
				return err
			}
			out.Active = append(out.Active, Device{Session: sessionOf(s), Cursors: cs})
		}
		return nil
	})
	if err != nil {
		return UserDevices{}, fmt.Errorf("fsm: devices of %q: %w", truncate(user), err)
	}
	return out, nil
}

// recentlyEnded reads the newest n ended sessions, newest last.
func recentlyEnded(db sealed, uk []byte, n int) ([]Session, error) {
	prefix := kindKey(uk, devKindEndedExpiry, nil)
	var out []Session
	c := db.b.Cursor()
	k, _ := c.Seek(kindKey(uk, devKindEndedExpiry+1, nil))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, _ = c.Prev() {
		if len(k) < len(prefix)+8 {
			return nil, fmt.Errorf("%w: ended-session index key %x", ErrCorruptState, k)
		}
		s, err := readEndedSession(db, uk, string(k[len(prefix)+8:]))
		if err != nil {
			return nil, err
		}
		if s != nil {
			out = append(out, sessionOf(s))
		}
	}
	slices.Reverse(out)
	return out, nil
}

// Cursors reads a device's cursors (one per user timeline, Seq 0 where it
// acknowledged nothing) from the local replica.
func (f *FSM) Cursors(user, device string) ([]Cursor, error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	if err := ValidateDeviceID(device); err != nil {
		return nil, err
	}
	var out []Cursor
	err := f.view(func(root *bolt.Bucket) (err error) {
		out, err = readCursors(root, sealed{root.Bucket(bucketDevices)}, user, device)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: cursors of %q/%q: %w", truncate(user), truncate(device), err)
	}
	return out, nil
}

func readCursors(root *bolt.Bucket, db sealed, user, device string) ([]Cursor, error) {
	uk := timelineKey(user)
	tlb := sealed{root.Bucket(bucketTimelines)}
	var out []Cursor
	for _, tl := range userTimelines(user) {
		seq, err := db.GetU64(cursorKey(uk, device, tl))
		if err != nil {
			return nil, err
		}
		ctr, err := seqgen.Get(tlb, counterKey(timelineKey(tl)))
		if err != nil {
			return nil, err
		}
		out = append(out, Cursor{Timeline: tl, Seq: seq, Head: ctr.Head})
	}
	return out, nil
}

// SessionState is what ValidateSession answers.
type SessionState int

const (
	// SessionValid: the session is active.
	SessionValid SessionState = iota + 1
	// SessionRevoked: the session ended (logout, replaced, kicked).
	SessionRevoked
	// SessionUnknown: no such session, or one that ended more than
	// EndedSessionMemoryMs ago.
	SessionUnknown
)

func (s SessionState) String() string {
	switch s {
	case SessionValid:
		return "valid"
	case SessionRevoked:
		return "revoked"
	case SessionUnknown:
		return "unknown"
	}
	return fmt.Sprintf("SessionState(%d)", int(s))
}

// ValidateSession says whether a session is active, from the local replica.
func (f *FSM) ValidateSession(user, sessionID string) (SessionState, Session, error) {
	if err := ValidateUser(user); err != nil {
		return 0, Session{}, err
	}
	if err := ValidateSessionID(sessionID); err != nil {
		return 0, Session{}, err
	}
	state, out := SessionUnknown, Session{}
	err := f.view(func(root *bolt.Bucket) error {
		db, uk := sealed{root.Bucket(bucketDevices)}, timelineKey(user)
		ds, err := readSessions(db, uk)
		if err != nil {
			return err
		}
		s, err := lookupSession(db, uk, ds, sessionID)
		if err != nil {
			return err
		}
		if s != nil {
			out, state = sessionOf(s), SessionValid
			if s.GetEnded() {
				state = SessionRevoked
			}
		}
		return nil
	})
	if err != nil {
		return 0, Session{}, fmt.Errorf("fsm: session of %q: %w", truncate(user), err)
	}
	return state, out, nil
}

// ConversationList is a page of a user's conversation list.
type ConversationList struct {
	CollectionState
	Conversations []ConversationSummary
	More          bool
	NextAfterKey  string
}

// Conversations reads a page of the user's conversation list (the
// collection conversations/<user>) in conversation-id order.
func (f *FSM) Conversations(user, afterKey string, limit int) (ConversationList, error) {
	if err := ValidateUser(user); err != nil {
		return ConversationList{}, err
	}
	page, err := f.ListRecords(shard.ConversationsCollection(user), afterKey, limit, 0)
	if err != nil {
		return ConversationList{}, err
	}
	out := ConversationList{CollectionState: page.CollectionState, More: page.More, NextAfterKey: page.NextAfterKey}
	for _, r := range page.Records {
		s, err := DecodeConversationSummary(r.Value)
		if err != nil {
			return ConversationList{}, err
		}
		out.Conversations = append(out.Conversations, summaryOf(r.Key, s))
	}
	return out, nil
}

// DecodeConversationSummary decodes a record value of a conversation list.
func DecodeConversationSummary(v []byte) (*fsmpb.ConversationSummary, error) {
	var s fsmpb.ConversationSummary
	if err := proto.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("%w: decode conversation summary: %v", ErrCorruptState, err)
	}
	return &s, nil
}
