package loginpolicy

import (
	"errors"
	"log/slog"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/storage"
)

// machine is a state machine driven through its raft adapter, as a group
// replica is.
type machine struct {
	t    *testing.T
	f    *fsm.FSM
	next uint64
}

func newMachine(t *testing.T) *machine {
	e, err := storage.Open(storage.Options{Dir: t.TempDir(), InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	st, err := e.State(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.Open(fsm.Options{State: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &machine{t: t, f: f, next: 1}
}

func (m *machine) apply(cmd *fsmpb.Command) *fsm.Result {
	m.t.Helper()
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		m.t.Fatal(err)
	}
	res := m.f.Apply(&raft.Log{Index: m.next, Term: 1, Type: raft.LogCommand, Data: data}).(*fsm.Result)
	m.next++
	return res
}

type login struct{ device, class, session string }

func TestPolicies(t *testing.T) {
	custom := "mobile=phone+pad:2,desk=desktop+web:1"
	cases := []struct {
		policy string
		logins []login
		// survive: the active sessions at the end; ended: session -> reason.
		survive []string
		ended   map[string]string
	}{
		{All, []login{{"p1", "phone", "s1"}, {"p2", "phone", "s2"}, {"d1", "desktop", "s3"}, {"w1", "web", "s4"}},
			[]string{"s1", "s2", "s3", "s4"}, nil},
		{OnePerClass, []login{{"p1", "phone", "s1"}, {"d1", "desktop", "s2"}, {"p2", "phone", "s3"}, {"w1", "web", "s4"}, {"a1", "pad", "s5"}},
			[]string{"s2", "s3", "s4", "s5"}, map[string]string{"s1": fsm.EndKicked}},
		{OnePerClass, []login{{"p1", "phone", "s1"}, {"p1", "phone", "s1"}, {"p1", "phone", "s1"}},
			[]string{"s1"}, nil}, // a reconnect never kicks its own device
		{OnePerClass, []login{{"p1", "phone", "s1"}, {"p1", "phone", "s2"}},
			[]string{"s2"}, map[string]string{"s1": fsm.EndReplaced}}, // the same device, a new session
		{OneDevice, []login{{"p1", "phone", "s1"}, {"d1", "desktop", "s2"}, {"w1", "web", "s3"}},
			[]string{"s3"}, map[string]string{"s1": fsm.EndKicked, "s2": fsm.EndKicked}},
		{OneMobileOnePCWebFree, []login{{"p1", "phone", "s1"}, {"a1", "pad", "s2"}, {"d1", "desktop", "s3"}, {"w1", "web", "s4"}, {"w2", "web", "s5"}, {"d2", "desktop", "s6"}},
			[]string{"s2", "s4", "s5", "s6"}, map[string]string{"s1": fsm.EndKicked, "s3": fsm.EndKicked}},
		{custom, []login{{"p1", "phone", "s1"}, {"a1", "pad", "s2"}, {"p2", "phone", "s3"}, {"d1", "desktop", "s4"}, {"w1", "web", "s5"}, {"p1", "phone", "s1"}},
			[]string{"s2", "s3", "s5"}, map[string]string{"s1": fsm.EndKicked, "s4": fsm.EndKicked}},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			p, err := Parse(tc.policy, DefaultClasses)
			if err != nil {
				t.Fatal(err)
			}
			m := newMachine(t)
			m.apply(&fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: 1, Ranges: []*fsmpb.SlotRange{{Start: 0, End: 4096}}}}})
			kicks := map[string]int{}
			for i, l := range tc.logins {
				res := m.apply(&fsmpb.Command{NowMs: int64(1000 + i), Op: &fsmpb.Command_Login{Login: &fsmpb.Login{
					User: "u", DeviceId: l.device, DeviceClass: l.class, SessionId: l.session, Policy: p}}})
				if ended := devsEnded(t, m); ended[l.session] {
					if !errors.Is(res.Err, fsm.ErrSessionEnded) {
						t.Fatalf("login %d of an ended session: %v, want ErrSessionEnded", i, res.Err)
					}
					continue
				}
				if res.Err != nil {
					t.Fatalf("login %d: %v", i, res.Err)
				}
				for _, e := range res.Login.Ended {
					kicks[e.SessionID]++
				}
			}
			devs, err := m.f.Devices("u")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range devs.Active {
				got = append(got, d.SessionID)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.survive) {
				t.Errorf("surviving sessions %v, want %v", got, tc.survive)
			}
			for _, e := range devs.Ended {
				if want := tc.ended[e.SessionID]; e.EndReason != want {
					t.Errorf("session %s ended %q, want %q", e.SessionID, e.EndReason, want)
				}
				if kicks[e.SessionID] != 1 {
					t.Errorf("session %s was reported ended %d times", e.SessionID, kicks[e.SessionID])
				}
			}
			if len(devs.Ended) != len(tc.ended) {
				t.Errorf("%d sessions ended, want %d", len(devs.Ended), len(tc.ended))
			}
			// Exactly one event per ended session, with its reason.
			events, err := m.f.Pull("device-events/u", 0, 100, 0)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]string{}
			for _, e := range events.Entries {
				if _, dup := seen[e.Metadata["session_id"]]; dup {
					t.Errorf("two events for session %s", e.Metadata["session_id"])
				}
				seen[e.Metadata["session_id"]] = e.Metadata["reason"]
			}
			if len(seen) != len(tc.ended) {
				t.Errorf("events %v, want one per ended session %v", seen, tc.ended)
			}
			for s, r := range tc.ended {
				if seen[s] != r {
					t.Errorf("event for %s has reason %q, want %q", s, seen[s], r)
				}
			}
		})
	}
}

func TestParseRefusesBadPolicies(t *testing.T) {
	for _, spec := range []string{
		"nonsense",
		"mobile=phone+pad:1",                  // desktop and web unmapped
		"a=phone+pad:1,b=phone+desktop+web:0", // phone twice
		"a=phone+pad+desktop+web",             // no limit
		"a=phone+pad+desktop+web:x",
		"a=phone+pad+desktop+web:65", // above MaxActiveSessions
	} {
		if _, err := Parse(spec, DefaultClasses); err == nil {
			t.Errorf("Parse(%q) accepted it", spec)
		}
	}
	if _, err := Parse(OneMobileOnePCWebFree, []string{"phone", "tv"}); err == nil {
		t.Error("the mobile/pc/web preset accepted classes it does not know")
	}
}

// devsEnded is the set of the user's ended sessions: a login reusing one
// must be refused.
func devsEnded(t *testing.T, m *machine) map[string]bool {
	devs, err := m.f.Devices("u")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range devs.Ended {
		out[e.SessionID] = true
	}
	return out
}
