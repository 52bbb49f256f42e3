package fsm

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

var onePerClass = &fsmpb.LoginPolicy{Groups: []*fsmpb.ClassGroup{
	{Name: "phone", Classes: []string{"phone"}, Limit: 1},
	{Name: "desktop", Classes: []string{"desktop"}, Limit: 1},
}}

func loginCmd(user, device, class, session string, now int64) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_Login{Login: &fsmpb.Login{
		User: user, DeviceId: device, DeviceClass: class, SessionId: session, Policy: onePerClass}}}
}

func ackCmd(user, device, timeline string, seq uint64, now int64) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_AckCursor{AckCursor: &fsmpb.AckCursor{User: user, DeviceId: device, Timeline: timeline, Seq: seq}}}
}

func TestAckCursorNeverRewindsAndIsFenced(t *testing.T) {
	h := newHarness(t)
	h.apply(loginCmd("u", "p1", "phone", "s1", 10))
	for i := 0; i < 5; i++ {
		h.apply(appendCmd("u", "m", "", 11))
	}
	steps := []struct {
		seq      uint64
		want     uint64
		advanced bool
	}{{3, 3, true}, {2, 3, false}, {5, 5, true}, {5, 5, false}}
	for _, s := range steps {
		r := h.apply(ackCmd("u", "p1", "u", s.seq, 12))[0]
		if r.Err != nil || r.Ack.Seq != s.want || r.Ack.Advanced != s.advanced {
			t.Fatalf("ack %d: %+v %v, want cursor %d advanced %v", s.seq, r.Ack, r.Err, s.want, s.advanced)
		}
	}
	before := h.digest()
	refused := []struct {
		cmd  *fsmpb.Command
		want error
	}{
		{ackCmd("u", "p1", "u", 6, 13), ErrInvalidArgument},                  // past the head
		{ackCmd("u", "p1", "other", 1, 13), ErrInvalidArgument},              // not the user's timeline
		{ackCmd("u", "p2", "u", 1, 13), ErrNoSession},                        // never logged in
		{ackCmd("", "p1", "u", 1, 13), ErrInvalidArgument},                   // empty user
		{ackCmd("u", "", "u", 1, 13), ErrInvalidArgument},                    // empty device
		{loginCmd("u", "p9", "tv", "s9", 13), ErrInvalidArgument},            // unknown class
		{loginCmd("u", "p9", "phone", "", 13), ErrInvalidArgument},           // empty session
		{loginCmd("u", "p2", "phone", "s1", 13), ErrSessionConflict},         // another device's session
		{loginCmd("devices/u", "p1", "phone", "s1", 13), ErrInvalidArgument}, // a derived id as user
	}
	for _, c := range refused {
		if r := h.apply(c.cmd)[0]; !errors.Is(r.Err, c.want) {
			t.Errorf("%v: %v, want %v", c.cmd, r.Err, c.want)
		}
	}
	if h.digest() != before {
		t.Fatal("a refused command changed the state")
	}
	// Kicked by a second phone: the first one's cursors go, and it is fenced.
	r := h.apply(loginCmd("u", "p2", "phone", "s2", 20))[0]
	if r.Err != nil || len(r.Login.Ended) != 1 || r.Login.Ended[0].SessionID != "s1" || r.Login.Ended[0].EndReason != EndKicked {
		t.Fatalf("second phone: %+v %v", r.Login, r.Err)
	}
	if r := h.apply(ackCmd("u", "p1", "u", 5, 21))[0]; !errors.Is(r.Err, ErrNoSession) {
		t.Fatalf("a kicked device acked: %v", r.Err)
	}
	if r := h.apply(loginCmd("u", "p1", "phone", "s1", 22))[0]; !errors.Is(r.Err, ErrSessionEnded) {
		t.Fatalf("a kicked session logged in again: %v", r.Err)
	}
	state, s, err := h.f.ValidateSession("u", "s1")
	if err != nil || state != SessionRevoked || s.EndReason != EndKicked || s.EndedBy != "s2" {
		t.Fatalf("ValidateSession(s1) = %v %+v %v", state, s, err)
	}
	if state, _, _ := h.f.ValidateSession("u", "s2"); state != SessionValid {
		t.Fatalf("ValidateSession(s2) = %v", state)
	}
	if state, _, _ := h.f.ValidateSession("u", "nope"); state != SessionUnknown {
		t.Fatalf("ValidateSession(nope) = %v", state)
	}
	cs, err := h.f.Cursors("u", "p1")
	if err != nil || cs[0].Seq != 0 {
		t.Fatalf("the kicked device kept its cursor: %+v %v", cs, err)
	}
}

func TestDeviceListIsACollection(t *testing.T) {
	h := newHarness(t)
	h.apply(loginCmd("u", "p1", "phone", "s1", 10), loginCmd("u", "d1", "desktop", "s2", 11))
	res, err := h.f.ListRecords("devices/u", "", 10, 0)
	if err != nil || len(res.Records) != 2 || res.Version != 2 {
		t.Fatalf("device list %+v %v", res, err)
	}
	// A reconnect within the last-seen resolution writes nothing.
	h.apply(loginCmd("u", "p1", "phone", "s1", 12))
	touch := &fsmpb.Command{NowMs: 13, Op: &fsmpb.Command_TouchDevices{TouchDevices: &fsmpb.TouchDevices{Items: []*fsmpb.DeviceRef{{User: "u", DeviceId: "p1"}}}}}
	h.apply(touch)
	if res, _ := h.f.ListRecords("devices/u", "", 10, 0); res.Version != 2 {
		t.Fatalf("a reconnect or touch within a minute wrote a version: %d", res.Version)
	}
	touch.NowMs = 10 + LastSeenResolutionMs
	h.apply(touch)
	if res, _ := h.f.ListRecords("devices/u", "", 10, 0); res.Version != 3 {
		t.Fatalf("a touch after a minute: version %d, want 3", res.Version)
	}
	// Logout removes the device from the list, once.
	logout := &fsmpb.Command{NowMs: 20 + LastSeenResolutionMs, Op: &fsmpb.Command_Logout{Logout: &fsmpb.Logout{User: "u", SessionId: "s1"}}}
	if r := h.apply(logout, logout); r[0].Err != nil || r[0].Logout.AlreadyEnded || !r[1].Logout.AlreadyEnded {
		t.Fatalf("logout twice: %+v %+v", r[0], r[1])
	}
	res, _ = h.f.ListRecords("devices/u", "", 10, 0)
	if len(res.Records) != 1 || res.Records[0].Key != "d1" {
		t.Fatalf("after logout the list is %+v", res.Records)
	}
	if ev, _ := h.f.Pull("device-events/u", 0, 10, 0); len(ev.Entries) != 1 || ev.Entries[0].Metadata["reason"] != EndLogout {
		t.Fatalf("events after logout twice: %+v", ev.Entries)
	}
	// Clients cannot write derived state.
	if r := h.apply(writeCmd("devices/u", 30, put("p1", "forged")))[0]; !errors.Is(r.Err, ErrInvalidArgument) {
		t.Fatalf("a client write to devices/u: %v", r.Err)
	}
	if r := h.apply(appendCmd("device-events/u", "forged", "", 30))[0]; !errors.Is(r.Err, ErrInvalidArgument) {
		t.Fatalf("a client append to device-events/u: %v", r.Err)
	}
}

func TestTooManySessionsIsRefused(t *testing.T) {
	h := newHarness(t)
	all := &fsmpb.LoginPolicy{Groups: []*fsmpb.ClassGroup{{Name: "all", Classes: []string{"web"}}}}
	for i := 0; i <= MaxActiveSessions; i++ {
		r := h.apply(&fsmpb.Command{NowMs: 1, Op: &fsmpb.Command_Login{Login: &fsmpb.Login{
			User: "u", DeviceId: string(rune('A' + i)), DeviceClass: "web", SessionId: string(rune('a' + i)), Policy: all}}})[0]
		if i < MaxActiveSessions && r.Err != nil {
			t.Fatalf("login %d: %v", i, r.Err)
		}
		if i == MaxActiveSessions && !errors.Is(r.Err, ErrTooManySessions) {
			t.Fatalf("login %d past the limit: %v", i, r.Err)
		}
	}
}

func TestRetentionHonoursActiveDeviceCursors(t *testing.T) {
	const minute = 60_000
	policy := RetentionPolicy{
		User: Retention{MaxEntries: 10},
		Cursors: CursorRetention{
			Hold: true, Cap: Retention{MaxEntries: 20}, InactiveAfterMs: 60 * minute,
		},
	}
	keepFrom := func(h *harness, now int64) uint64 {
		t.Helper()
		cands, _, err := h.f.RetentionCandidates(policy, now, "", 100, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cands {
			if c.Timeline == "u" {
				return c.KeepFrom
			}
		}
		return 0
	}
	h := newHarness(t)
	h.apply(loginCmd("u", "p1", "phone", "s1", 0), loginCmd("u", "d1", "desktop", "s2", 0))
	for i := 0; i < 15; i++ {
		h.apply(appendCmd("u", "m", "", 1))
	}
	h.apply(ackCmd("u", "p1", "u", 2, 2), ackCmd("u", "d1", "u", 15, 2))
	// 15 entries, the policy keeps 10 (from 6); the phone has acked 2: kept from 3.
	if got := keepFrom(h, 3); got != 3 {
		t.Fatalf("with a lagging device: keep from %d, want 3", got)
	}
	// Up to the cap: at 30 entries the cap keeps 20 (from 11) whatever the phone.
	for i := 0; i < 15; i++ {
		h.apply(appendCmd("u", "m", "", 4))
	}
	if got := keepFrom(h, 5); got != 11 {
		t.Fatalf("past the cap: keep from %d, want 11", got)
	}
	// The desktop stays seen, the phone does not: after an hour the phone
	// holds nothing back and the policy alone decides.
	h.apply(ackCmd("u", "d1", "u", 30, 61*minute))
	if got := keepFrom(h, 61*minute+1); got != 21 {
		t.Fatalf("with the lagging device inactive: keep from %d, want 21", got)
	}
}

// TestEndedSessionsStayEndedPastTheList: a kicked session that has fallen
// out of the listed ended sessions is still refused when its device
// reconnects with it (jepsen-lite found such a reconnect taken for a new
// login, its session then ending twice), until EndedSessionMemoryMs.
func TestEndedSessionsStayEndedPastTheList(t *testing.T) {
	h := newHarness(t)
	h.apply(loginCmd("u", "p1", "phone", "old", 10))
	for i := range MaxEndedSessions + 6 {
		if r := h.apply(loginCmd("u", "p2", "phone", fmt.Sprint("s", i), int64(20+i)))[0]; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	devs, _ := h.f.Devices("u")
	if slices.ContainsFunc(devs.Ended, func(s Session) bool { return s.SessionID == "old" }) {
		t.Fatal("the first session is still listed: the test does not reach past the list")
	}
	if r := h.apply(loginCmd("u", "p1", "phone", "old", 100))[0]; !errors.Is(r.Err, ErrSessionEnded) {
		t.Fatalf("a reconnect with a session ended long ago: %v, want ErrSessionEnded", r.Err)
	}
	if st, s, _ := h.f.ValidateSession("u", "old"); st != SessionRevoked || s.EndReason != EndKicked {
		t.Fatalf("ValidateSession(old) = %v %+v", st, s)
	}
	later := int64(10 + EndedSessionMemoryMs + 1)
	for i := range 40 { // each login forgets a few
		h.apply(loginCmd("u", "d1", "desktop", fmt.Sprint("d", i), later+int64(i)))
	}
	if st, _, _ := h.f.ValidateSession("u", "old"); st != SessionUnknown {
		t.Fatalf("after the memory time ValidateSession(old) = %v, want unknown", st)
	}
}

// TestAckCountsAsSeen: an ack a minute or more after the last-seen time
// raises it (one device-list version), one within the minute does not.
func TestAckCountsAsSeen(t *testing.T) {
	h := newHarness(t)
	h.apply(loginCmd("u", "p1", "phone", "s1", 10), appendCmd("u", "m", "", 10))
	version := func() uint64 {
		res, err := h.f.ListRecords("devices/u", "", 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		return res.Version
	}
	v0 := version()
	lastSeen := func() int64 {
		d, err := h.f.Devices("u")
		if err != nil || len(d.Active) != 1 {
			t.Fatalf("devices %+v %v", d, err)
		}
		return d.Active[0].LastSeenMs
	}
	h.apply(ackCmd("u", "p1", "u", 1, 20))
	if lastSeen() != 10 || version() != v0 {
		t.Fatalf("an ack within the minute: last seen %d, version %d (was %d)", lastSeen(), version(), v0)
	}
	h.apply(ackCmd("u", "p1", "u", 1, 10+LastSeenResolutionMs))
	if lastSeen() != 10+LastSeenResolutionMs || version() != v0+1 {
		t.Fatalf("an ack a minute later: last seen %d, version %d (was %d)", lastSeen(), version(), v0)
	}
}
