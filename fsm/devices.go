package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/seqgen"
	"github.com/syncstore/syncstore/shard"
)

// A user's keys in bucketDevices, after timelineKey(user): a kind byte,
// then the kind's suffix. They share the user's slot, so a user's sessions,
// cursors and read state move with the user's timeline.
const (
	// devKindSessions -> DeviceSessions.
	devKindSessions byte = 0
	// devKindCursor + uint16 len(device) + device + timeline -> seq (8).
	devKindCursor byte = 1
	// devKindEnded + session id -> Session: every session ended within
	// EndedSessionMemoryMs, so a kicked device reconnecting with its old
	// session id is refused, not taken for a new login.
	devKindEnded byte = 2
	// devKindEndedExpiry + ended_ms (8) + session id -> nothing: the order
	// in which ended sessions are forgotten.
	devKindEndedExpiry byte = 3
)

// EndedSessionMemoryMs is how long an ended session's id is remembered:
// a Login with it within that time is refused (ErrSessionEnded). Session
// ids must not be reused after it.
const EndedSessionMemoryMs = 30 * 24 * 3600 * 1000

// endedGCPerCommand bounds how many forgotten ended sessions one login or
// logout removes (above one, so forgetting outpaces ending).
const endedGCPerCommand = 4

// Why a session ended.
const (
	EndLogout   = "logout"
	EndReplaced = "replaced" // its device logged in with a new session
	EndKicked   = "kicked"   // a login into its full class group
)

// LastSeenResolutionMs is how coarse a device's last-seen time is: a touch
// within it of the stored time changes nothing, so a device costs at most
// one device-list version a minute however often it is seen.
const LastSeenResolutionMs = 60_000

// Session is a device session as read.
type Session struct {
	SessionID  string
	DeviceID   string
	Class      string
	Epoch      uint64
	LoginMs    int64
	LastSeenMs int64
	Metadata   map[string]string
	Ended      bool
	EndReason  string
	EndedMs    int64
	EndedBy    string
}

func sessionOf(s *fsmpb.Session) Session {
	return Session{
		SessionID: s.GetSessionId(), DeviceID: s.GetDeviceId(), Class: s.GetDeviceClass(), Epoch: s.GetEpoch(),
		LoginMs: s.GetLoginMs(), LastSeenMs: s.GetLastSeenMs(), Metadata: s.GetMetadata(),
		Ended: s.GetEnded(), EndReason: s.GetEndReason(), EndedMs: s.GetEndedMs(), EndedBy: s.GetEndedBy(),
	}
}

// LoginResult is the outcome of a Login.
type LoginResult struct {
	Session Session
	// Ended: the sessions this login ended, in the order the policy ended them.
	Ended []Session
	// Refreshed: the session existed (a reconnect); nothing was ended.
	Refreshed bool
}

// LogoutResult is the outcome of a Logout.
type LogoutResult struct {
	Session Session
	// AlreadyEnded: the session had ended before; nothing changed.
	AlreadyEnded bool
}

// AckResult is the outcome of an AckCursor: the cursor as it stands.
type AckResult struct {
	Seq      uint64
	Advanced bool
	// SessionID is the device's active session (a cursor never rewinds
	// within a session; one that ends takes the device's cursors along).
	SessionID string
}

// Session errors (wrapped with the details).
var (
	// ErrSessionEnded: a Login with the id of a session that has ended; a
	// kicked device must log in with a new session.
	ErrSessionEnded = errors.New("fsm: session has ended")
	// ErrSessionConflict: a Login with the id of another device's session.
	ErrSessionConflict = errors.New("fsm: session id belongs to another device or class")
	// ErrUnknownSession: no such session (never known, or forgotten).
	ErrUnknownSession = errors.New("fsm: unknown session")
	// ErrNoSession: the device has no active session.
	ErrNoSession = errors.New("fsm: device has no active session")
	// ErrTooManySessions: the user has MaxActiveSessions active sessions.
	ErrTooManySessions = errors.New("fsm: too many active sessions")
)

func sessionsKey(uk []byte) []byte { return kindKey(uk, devKindSessions, nil) }

func lenPrefixed(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func cursorPrefix(uk []byte, device string) []byte {
	return kindKey(uk, devKindCursor, lenPrefixed(device))
}

func cursorKey(uk []byte, device, timeline string) []byte {
	return append(cursorPrefix(uk, device), timeline...)
}

// userTimelines are the timelines a device of user keeps a cursor on.
func userTimelines(user string) [2]string { return [2]string{user, shard.DeviceEventsTimeline(user)} }

func isUserTimeline(user, timeline string) bool {
	tls := userTimelines(user)
	return timeline == tls[0] || timeline == tls[1]
}

func readSessions(db sealed, uk []byte) (*fsmpb.DeviceSessions, error) {
	ds := &fsmpb.DeviceSessions{}
	v, err := db.Get(sessionsKey(uk))
	if err != nil || v == nil {
		return ds, err
	}
	if err := proto.Unmarshal(v, ds); err != nil {
		return nil, fmt.Errorf("%w: decode sessions %x: %v", ErrCorruptState, uk, err)
	}
	return ds, nil
}

func writeSessions(db sealed, uk []byte, ds *fsmpb.DeviceSessions) error {
	v, err := stored.Marshal(ds)
	if err != nil {
		return fmt.Errorf("encode sessions: %w", err)
	}
	return db.Put(sessionsKey(uk), v)
}

func findSession(ds *fsmpb.DeviceSessions, id string) *fsmpb.Session {
	for _, s := range ds.GetSessions() {
		if s.GetSessionId() == id {
			return s
		}
	}
	return nil
}

// activeSession is the device's active session, nil if it has none.
func activeSession(ds *fsmpb.DeviceSessions, device string) *fsmpb.Session {
	for _, s := range ds.GetSessions() {
		if s.GetDeviceId() == device {
			return s
		}
	}
	return nil
}

// applyLogin decides a login in one place, in a fixed order: a known
// session is refreshed (ending nothing); otherwise the device's own active
// session is replaced, then the oldest sessions (by epoch) of the class
// group are ended until the new one fits its limit. The sessions ended get
// one event each in the user's device-events timeline, and the device list
// changes in one version, all in this transaction.
func applyLogin(root *bolt.Bucket, ch *Changes, nowMs int64, l *fsmpb.Login) (*LoginResult, error) {
	if err := ValidateLogin(l); err != nil {
		return nil, reject(err)
	}
	db, uk, ds, s, err := userSession(root, l.GetUser(), l.GetSessionId(), nowMs)
	if err != nil {
		return nil, err
	}
	if s != nil {
		return refreshSession(root, ch, db, uk, ds, s, nowMs, l)
	}
	s = &fsmpb.Session{
		SessionId: l.GetSessionId(), DeviceId: l.GetDeviceId(), DeviceClass: l.GetDeviceClass(),
		Epoch: ds.GetEpoch() + 1, LoginMs: nowMs, LastSeenMs: nowMs, Metadata: l.GetMetadata(),
	}
	var ending []*fsmpb.Session
	reasons := map[*fsmpb.Session]string{}
	if old := activeSession(ds, l.GetDeviceId()); old != nil {
		ending = append(ending, old)
		reasons[old] = EndReplaced
	}
	group := classGroup(l.GetPolicy(), l.GetDeviceClass())
	if limit := int(group.GetLimit()); limit > 0 {
		var inGroup []*fsmpb.Session // active, not ending, in epoch order
		for _, o := range ds.GetSessions() {
			if reasons[o] == "" && slices.Contains(group.GetClasses(), o.GetDeviceClass()) {
				inGroup = append(inGroup, o)
			}
		}
		for len(inGroup) >= limit {
			ending = append(ending, inGroup[0])
			reasons[inGroup[0]] = EndKicked
			inGroup = inGroup[1:]
		}
	}
	active := len(ds.GetSessions()) // the record holds active sessions only
	if active-len(ending)+1 > MaxActiveSessions {
		return nil, reject(fmt.Errorf("%w: user %q has %d active sessions; the limit is %d: log one out first", ErrTooManySessions, truncate(l.GetUser()), active, MaxActiveSessions))
	}
	ds.Epoch = s.GetEpoch()
	ds.Sessions = append(ds.Sessions, s)
	res := &LoginResult{Session: sessionOf(s)}
	ops := []*fsmpb.RecordOp{}
	for _, o := range ending {
		if err := endSession(root, ch, db, uk, l.GetUser(), o, reasons[o], s.GetSessionId(), nowMs); err != nil {
			return nil, err
		}
		res.Ended = append(res.Ended, sessionOf(o))
		if o.GetDeviceId() != s.GetDeviceId() {
			ops = append(ops, &fsmpb.RecordOp{Key: o.GetDeviceId(), Delete: true})
		}
	}
	dropEnded(ds)
	rec, err := deviceRecordOp(s)
	if err != nil {
		return nil, err
	}
	if err := saveDevices(root, ch, db, uk, ds, l.GetUser(), nowMs, append(ops, rec)); err != nil {
		return nil, err
	}
	return res, nil
}

// userSession opens a user's sessions for a login or logout: the user's
// slot must be this group's; a few long-ended sessions are forgotten; and
// the session named, if known (active or ended), is found.
func userSession(root *bolt.Bucket, user, sessionID string, nowMs int64) (db sealed, uk []byte, ds *fsmpb.DeviceSessions, s *fsmpb.Session, err error) {
	if err = checkOwned(root, user); err != nil {
		return
	}
	db, uk = sealed{root.Bucket(bucketDevices)}, timelineKey(user)
	if ds, err = readSessions(db, uk); err != nil {
		return
	}
	if err = gcEndedSessions(db, uk, nowMs); err != nil {
		return
	}
	s, err = lookupSession(db, uk, ds, sessionID)
	return
}

// refreshSession answers a Login of a known session: the same device
// reconnecting. It ends nothing; an ended session stays ended.
func refreshSession(root *bolt.Bucket, ch *Changes, db sealed, uk []byte, ds *fsmpb.DeviceSessions, s *fsmpb.Session, nowMs int64, l *fsmpb.Login) (*LoginResult, error) {
	switch {
	case s.GetEnded():
		return nil, reject(fmt.Errorf("%w: session %q of device %q ended (%s); log in with a new session", ErrSessionEnded, truncate(s.GetSessionId()), truncate(s.GetDeviceId()), s.GetEndReason()))
	case s.GetDeviceId() != l.GetDeviceId() || s.GetDeviceClass() != l.GetDeviceClass():
		return nil, reject(fmt.Errorf("%w: session %q is device %q of class %q, not %q of class %q", ErrSessionConflict, truncate(s.GetSessionId()),
			truncate(s.GetDeviceId()), s.GetDeviceClass(), truncate(l.GetDeviceId()), l.GetDeviceClass()))
	}
	changed := !maps.Equal(s.GetMetadata(), l.GetMetadata())
	if changed {
		s.Metadata = l.GetMetadata()
	}
	if seen(s, nowMs) || changed {
		if err := saveSession(root, ch, db, uk, ds, s, l.GetUser(), nowMs); err != nil {
			return nil, err
		}
	}
	return &LoginResult{Session: sessionOf(s), Refreshed: true}, nil
}

// seen raises s's last-seen time to nowMs when it is at least
// LastSeenResolutionMs older, and says whether it did.
func seen(s *fsmpb.Session, nowMs int64) bool {
	if nowMs < s.GetLastSeenMs()+LastSeenResolutionMs {
		return false
	}
	s.LastSeenMs = nowMs
	return true
}

// saveSession writes the user's sessions and s's record in the device
// list.
func saveSession(root *bolt.Bucket, ch *Changes, db sealed, uk []byte, ds *fsmpb.DeviceSessions, s *fsmpb.Session, user string, nowMs int64) error {
	rec, err := deviceRecordOp(s)
	if err != nil {
		return err
	}
	return saveDevices(root, ch, db, uk, ds, user, nowMs, []*fsmpb.RecordOp{rec})
}

// saveDevices writes the user's sessions and applies ops to the device
// list as one new version of it.
func saveDevices(root *bolt.Bucket, ch *Changes, db sealed, uk []byte, ds *fsmpb.DeviceSessions, user string, nowMs int64, ops []*fsmpb.RecordOp) error {
	if err := writeSessions(db, uk, ds); err != nil {
		return err
	}
	return writeDerived(root, ch, shard.DevicesCollection(user), nowMs, ops)
}

// endSession marks s ended, appends its one event to the user's
// device-events timeline and drops the device's cursors unless the device
// goes on under a new session (replaced). The caller writes the sessions.
func endSession(root *bolt.Bucket, ch *Changes, db sealed, uk []byte, user string, s *fsmpb.Session, reason, by string, nowMs int64) error {
	s.Ended, s.EndReason, s.EndedMs, s.EndedBy = true, reason, nowMs, by
	v, err := stored.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode ended session: %w", err)
	}
	if err := db.Put(endedKey(uk, s.GetSessionId()), v); err != nil {
		return err
	}
	if err := db.Put(endedExpiryKey(uk, nowMs, s.GetSessionId()), nil); err != nil {
		return err
	}
	md := map[string]string{
		"event":        "session_ended",
		"session_id":   s.GetSessionId(),
		"device_id":    s.GetDeviceId(),
		"device_class": s.GetDeviceClass(),
		"epoch":        strconv.FormatUint(s.GetEpoch(), 10),
		"reason":       reason,
	}
	if by != "" {
		md["ended_by"] = by
	}
	if _, _, err := appendEntry(root, ch, shard.DeviceEventsTimeline(user), nowMs, &fsmpb.StoredEntry{Metadata: md}); err != nil {
		return err
	}
	if reason == EndReplaced {
		return nil
	}
	return deleteCursors(db, uk, s.GetDeviceId())
}

func deleteCursors(db sealed, uk []byte, device string) error {
	return deleteKeys(db, prefixedKeys(db, cursorPrefix(uk, device), 0, nil))
}

func endedKey(uk []byte, session string) []byte { return kindKey(uk, devKindEnded, []byte(session)) }

func endedExpiryKey(uk []byte, endedMs int64, session string) []byte {
	return kindKey(uk, devKindEndedExpiry, append(binary.BigEndian.AppendUint64(nil, uint64(endedMs)), session...))
}

// lookupSession finds a session by id: in the user's session record, or
// among the sessions ended within EndedSessionMemoryMs (nil: unknown).
func lookupSession(db sealed, uk []byte, ds *fsmpb.DeviceSessions, id string) (*fsmpb.Session, error) {
	if s := findSession(ds, id); s != nil {
		return s, nil
	}
	return readEndedSession(db, uk, id)
}

// readEndedSession reads a session ended within EndedSessionMemoryMs
// (nil: none).
func readEndedSession(db sealed, uk []byte, id string) (*fsmpb.Session, error) {
	v, err := db.Get(endedKey(uk, id))
	if err != nil || v == nil {
		return nil, err
	}
	var s fsmpb.Session
	if err := proto.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("%w: decode ended session: %v", ErrCorruptState, err)
	}
	return &s, nil
}

// gcEndedSessions forgets up to endedGCPerCommand sessions that ended
// more than EndedSessionMemoryMs before nowMs.
func gcEndedSessions(db sealed, uk []byte, nowMs int64) error {
	prefix := kindKey(uk, devKindEndedExpiry, nil)
	stale := prefixedKeys(db, prefix, endedGCPerCommand, func(suffix []byte) bool {
		return len(suffix) >= 8 && int64(binary.BigEndian.Uint64(suffix)) < nowMs-EndedSessionMemoryMs
	})
	for _, k := range stale {
		if err := db.Delete(endedKey(uk, string(k[len(prefix)+8:]))); err != nil {
			return err
		}
	}
	return deleteKeys(db, stale)
}

// dropEnded removes the ended sessions from the record: they live on
// under their own keys (devKindEnded) for EndedSessionMemoryMs.
func dropEnded(ds *fsmpb.DeviceSessions) {
	ds.Sessions = slices.DeleteFunc(ds.Sessions, func(s *fsmpb.Session) bool { return s.GetEnded() })
}

func deviceRecordOp(s *fsmpb.Session) (*fsmpb.RecordOp, error) {
	v, err := stored.Marshal(&fsmpb.DeviceRecord{
		SessionId: s.GetSessionId(), DeviceClass: s.GetDeviceClass(), Epoch: s.GetEpoch(),
		LoginMs: s.GetLoginMs(), LastSeenMs: s.GetLastSeenMs(), Metadata: s.GetMetadata(),
	})
	if err != nil {
		return nil, fmt.Errorf("encode device record: %w", err)
	}
	return &fsmpb.RecordOp{Key: s.GetDeviceId(), Value: v}, nil
}

// writeDerived applies ops to a derived collection as one new version.
func writeDerived(root *bolt.Bucket, ch *Changes, collection string, nowMs int64, ops []*fsmpb.RecordOp) error {
	cb := sealed{root.Bucket(bucketCollections)}
	ck := collectionKey(collection)
	info, err := readCollInfo(cb, ck)
	if err != nil {
		return err
	}
	info.Version++
	for _, op := range ops {
		if err := writeRecord(cb, ck, info, nowMs, op); err != nil {
			return err
		}
	}
	if err := writeCollInfo(cb, ck, info); err != nil {
		return err
	}
	ch.collectionMoved(collection, info.GetVersion())
	return nil
}

func applyLogout(root *bolt.Bucket, ch *Changes, nowMs int64, l *fsmpb.Logout) (*LogoutResult, error) {
	if err := ValidateLogout(l); err != nil {
		return nil, reject(err)
	}
	db, uk, ds, s, err := userSession(root, l.GetUser(), l.GetSessionId(), nowMs)
	if err != nil {
		return nil, err
	}
	switch {
	case s == nil:
		return nil, reject(fmt.Errorf("%w: user %q has no session %q", ErrUnknownSession, truncate(l.GetUser()), truncate(l.GetSessionId())))
	case s.GetEnded():
		return &LogoutResult{Session: sessionOf(s), AlreadyEnded: true}, nil
	}
	if err := endSession(root, ch, db, uk, l.GetUser(), s, EndLogout, "", nowMs); err != nil {
		return nil, err
	}
	dropEnded(ds)
	del := &fsmpb.RecordOp{Key: s.GetDeviceId(), Delete: true}
	if err := saveDevices(root, ch, db, uk, ds, l.GetUser(), nowMs, []*fsmpb.RecordOp{del}); err != nil {
		return nil, err
	}
	return &LogoutResult{Session: sessionOf(s)}, nil
}

// applyTouchDevices raises the last-seen time of each device's active
// session to now, when it is at least LastSeenResolutionMs older. A device
// without an active session is skipped: last-seen is soft state.
func applyTouchDevices(root *bolt.Bucket, ch *Changes, nowMs int64, t *fsmpb.TouchDevices) error {
	if err := ValidateTouchDevices(t); err != nil {
		return reject(err)
	}
	for _, it := range t.GetItems() {
		if err := checkOwned(root, it.GetUser()); err != nil {
			return err
		}
	}
	db := sealed{root.Bucket(bucketDevices)}
	for _, it := range t.GetItems() {
		if err := touchDevice(root, ch, db, it.GetUser(), it.GetDeviceId(), nowMs); err != nil {
			return err
		}
	}
	return nil
}

func touchDevice(root *bolt.Bucket, ch *Changes, db sealed, user, device string, nowMs int64) error {
	uk := timelineKey(user)
	ds, err := readSessions(db, uk)
	if err != nil {
		return err
	}
	if s := activeSession(ds, device); s != nil && seen(s, nowMs) {
		return saveSession(root, ch, db, uk, ds, s, user, nowMs)
	}
	return nil
}

// applyAckCursor raises a device's cursor on one of its user's timelines.
// Only a device with an active session has cursors (a kicked device is
// fenced), and a seq past the timeline's head is refused. An ack counts as
// the device being seen.
func applyAckCursor(root *bolt.Bucket, ch *Changes, nowMs int64, a *fsmpb.AckCursor) (*AckResult, error) {
	if err := ValidateAckCursor(a); err != nil {
		return nil, reject(err)
	}
	if err := checkOwned(root, a.GetUser()); err != nil {
		return nil, err
	}
	db := sealed{root.Bucket(bucketDevices)}
	uk := timelineKey(a.GetUser())
	ds, err := readSessions(db, uk)
	if err != nil {
		return nil, err
	}
	sess := activeSession(ds, a.GetDeviceId())
	if sess == nil {
		return nil, reject(fmt.Errorf("%w: device %q of user %q is not logged in", ErrNoSession, truncate(a.GetDeviceId()), truncate(a.GetUser())))
	}
	ctr, err := seqgen.Get(sealed{root.Bucket(bucketTimelines)}, counterKey(timelineKey(a.GetTimeline())))
	if err != nil {
		return nil, err
	}
	if a.GetSeq() > ctr.Head {
		return nil, reject(fmt.Errorf("%w: seq %d is past the head %d of timeline %q", ErrInvalidArgument, a.GetSeq(), ctr.Head, truncate(a.GetTimeline())))
	}
	ck := cursorKey(uk, a.GetDeviceId(), a.GetTimeline())
	cur, err := db.GetU64(ck)
	if err != nil {
		return nil, err
	}
	if seen(sess, nowMs) {
		if err := saveSession(root, ch, db, uk, ds, sess, a.GetUser(), nowMs); err != nil {
			return nil, err
		}
	}
	if a.GetSeq() <= cur {
		return &AckResult{Seq: cur, SessionID: sess.GetSessionId()}, nil
	}
	if err := db.Put(ck, u64(a.GetSeq())); err != nil {
		return nil, err
	}
	return &AckResult{Seq: a.GetSeq(), Advanced: true, SessionID: sess.GetSessionId()}, nil
}
