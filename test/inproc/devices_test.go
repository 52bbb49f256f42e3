package inproc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// loginUntilAnswered retries a Login until the cluster answers it: ok, or
// FAILED_PRECONDITION when its first attempt was applied and the other
// device's login has ended it since (the retry meets an ended session).
func loginUntilAnswered(ctx context.Context, cl *client.Client, user, device, session string, retries *atomic.Int64) (ended bool, err error) {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			retries.Add(1)
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Login(actx, user, device, "phone", session, nil)
		cancel()
		switch {
		case err == nil:
			return false, nil
		case status.Code(err) == codes.FailedPrecondition:
			return true, nil
		case ctx.Err() != nil:
			return false, fmt.Errorf("login %s/%s: %w", user, session, err)
		}
	}
}

// TestConcurrentLoginsDuringLeaderKill: two phones of one user log in at
// the same moment while the leader of the user's group is killed, 100
// times over (10 users per kill, 10 kills: the logins start as the kill
// begins or once the leader is dead). Each time exactly one session
// survives, every replica agrees on which, and the other has exactly one
// kick event in device-events/<user>, naming the survivor.
func TestConcurrentLoginsDuringLeaderKill(t *testing.T) {
	const rounds, usersPerRound = 10, 10
	c := testcluster.New(t, 3, func(cfg *node.Config) { cfg.Shards = 1 })
	c.WaitPlaced(30 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var users []string
	var retries atomic.Int64
	overlapped := 0 // logins answered only after their round's leader was dead
	for r := range rounds {
		victim := c.WaitGroupLeader(1, 30*time.Second)
		var wg sync.WaitGroup
		start := make(chan struct{})
		answered := make(chan time.Time, 2*usersPerRound)
		errs := make(chan error, 2*usersPerRound)
		for u := range usersPerRound {
			user := fmt.Sprintf("race-%02d-%d", r, u)
			users = append(users, user)
			for _, dev := range []string{"a", "b"} {
				wg.Go(func() {
					<-start
					if _, err := loginUntilAnswered(ctx, cl, user, "phone-"+dev, "s-"+dev, &retries); err != nil {
						errs <- err
					}
					answered <- time.Now()
				})
			}
		}
		// Even rounds start the logins as the kill begins (they may reach
		// the dying leader's log), odd ones once it is dead (they find no
		// leader and retry through the election).
		if r%2 == 0 {
			close(start)
			c.Kill(victim)
		} else {
			c.Kill(victim)
			close(start)
		}
		killed := time.Now()
		wg.Wait()
		close(errs)
		close(answered)
		for err := range errs {
			t.Fatal(err)
		}
		for at := range answered {
			if at.After(killed) {
				overlapped++
			}
		}
		c.Restart(victim)
	}
	t.Logf("%d of %d logins were answered only after their round's leader was dead", overlapped, 2*rounds*usersPerRound)
	t.Logf("%d logins retried past the client's own retries", retries.Load())
	if overlapped == 0 {
		t.Fatal("no login overlapped a leader kill")
	}
	c.WaitConverged(30 * time.Second)
	// Replicas may still be catching up: wait until all agree, then every
	// check below must hold.
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, user := range users {
			if err := checkRaceOutcome(ctx, c, user); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkRaceOutcome: user has one active session on every replica, the
// same everywhere, the other one ended by it, with exactly one event.
func checkRaceOutcome(ctx context.Context, c *testcluster.Cluster, user string) error {
	var survivor string
	for _, m := range c.Members {
		d, err := m.Node.Devices(ctx, user, node.Stale)
		if err != nil {
			return fmt.Errorf("%s: devices of %s: %v", m.ID, user, err)
		}
		if len(d.Active) != 1 {
			return fmt.Errorf("%s: %s has %d active sessions, want 1: %+v", m.ID, user, len(d.Active), d.Active)
		}
		if survivor == "" {
			survivor = d.Active[0].SessionID
		} else if d.Active[0].SessionID != survivor {
			return fmt.Errorf("replicas disagree on %s's session: %s and %s", user, survivor, d.Active[0].SessionID)
		}
		if len(d.Ended) != 1 || d.Ended[0].EndReason != fsm.EndKicked || d.Ended[0].EndedBy != survivor {
			return fmt.Errorf("%s: %s's ended sessions %+v, want the other one kicked by %s", m.ID, user, d.Ended, survivor)
		}
		events, err := m.Node.Pull(ctx, shard.DeviceEventsTimeline(user), 0, 10, node.Stale)
		if err != nil {
			return err
		}
		if len(events.Entries) != 1 || events.Entries[0].Metadata["session_id"] != d.Ended[0].SessionID ||
			events.Entries[0].Metadata["ended_by"] != survivor {
			return fmt.Errorf("%s: %s's kick events %+v, want one for %s", m.ID, user, events.Entries, d.Ended[0].SessionID)
		}
	}
	return nil
}

// unreadHistory is what the test did: every message sent, with its
// sender, and every read marker acknowledged.
type unreadHistory struct {
	mu    sync.Mutex
	sent  map[string][]delivery // conversation -> messages by seq (index seq-1)
	reads map[[2]string]uint64  // (user, conversation) -> highest marker acked
}

type delivery struct{ sender string }

// TestUnreadCountsMatchTheModelAcrossFailover: members send (their own
// messages among them) and read on two devices each, with random markers,
// while the leader of a group is killed. Afterwards every user's
// conversation list on every replica equals a model computed from the
// messages and the markers alone, and a read on one device cleared the
// count that the user's other device syncs.
func TestUnreadCountsMatchTheModelAcrossFailover(t *testing.T) {
	c := testcluster.New(t, 3, func(cfg *node.Config) { cfg.Shards = 2 })
	c.WaitPlaced(30 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	users := []string{"ua", "ub", "uc", "ud"}
	convs := []string{"room-1", "room-2", "room-3"}
	h := &unreadHistory{sent: map[string][]delivery{}, reads: map[[2]string]uint64{}}
	var msgs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				conv := convs[rng.IntN(len(convs))]
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				if rng.IntN(3) > 0 {
					res, err := cl.Send(actx, conv, u, users, []byte("m"), client.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-%d", u, n)})
					if err == nil {
						h.mu.Lock()
						for uint64(len(h.sent[conv])) < res.GetSeq() {
							h.sent[conv] = append(h.sent[conv], delivery{})
						}
						h.sent[conv][res.GetSeq()-1] = delivery{sender: u}
						h.mu.Unlock()
						msgs.Add(1)
					}
				} else {
					h.mu.Lock()
					seq := uint64(rng.IntN(len(h.sent[conv]) + 2))
					h.mu.Unlock()
					res, err := cl.MarkRead(actx, u, conv, seq)
					if err == nil {
						h.mu.Lock()
						k := [2]string{u, conv}
						if got := res.GetConversation().GetReadSeq(); got < h.reads[k] {
							t.Errorf("%s's read marker of %s went back from %d to %d", u, conv, h.reads[k], got)
						} else {
							h.reads[k] = got
						}
						h.mu.Unlock()
					}
				}
				acancel()
			}
		})
	}
	progress := func(n int64) {
		t.Helper()
		target := msgs.Load() + n
		testutil.Eventually(t, time.Minute, func() error {
			if msgs.Load() < target {
				return fmt.Errorf("%d messages of %d", msgs.Load(), target)
			}
			return nil
		})
	}
	progress(100)
	victim := c.WaitGroupLeader(c.Members[0].Node.ShardMap().GroupFor("ua"), 30*time.Second)
	c.Kill(victim)
	progress(100)
	c.Restart(victim)
	progress(100)
	close(stop)
	wg.Wait()

	// Every Send was answered (each retried with its key), so the
	// conversations are 1..head with known senders; wait for the outbox.
	c.WaitConverged(30 * time.Second)
	for _, conv := range convs {
		for i, d := range h.sent[conv] {
			if d.sender == "" {
				t.Fatalf("%s seq %d has no known sender", conv, i+1)
			}
		}
	}
	want := func(user, conv string) fsm.ConversationSummary {
		s := fsm.ConversationSummary{Conversation: conv, LastSeq: uint64(len(h.sent[conv])), ReadSeq: h.reads[[2]string{user, conv}]}
		s.LastSender = h.sent[conv][s.LastSeq-1].sender
		for i, d := range h.sent[conv] {
			if uint64(i+1) > s.ReadSeq && d.sender != user {
				s.Unread++
			}
		}
		return s
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, m := range c.Members {
			for _, u := range users {
				list, err := m.Node.Conversations(ctx, u, "", 100, node.Stale)
				if err != nil {
					return err
				}
				if len(list.Conversations) != len(convs) {
					return fmt.Errorf("%s: %s lists %d conversations", m.ID, u, len(list.Conversations))
				}
				for _, got := range list.Conversations {
					got.LastTsMs = 0
					if w := want(u, got.Conversation); got != w {
						return fmt.Errorf("%s: %s's %s is %+v, want %+v", m.ID, u, got.Conversation, got, w)
					}
				}
			}
		}
		return nil
	})

	// A read on one device clears the count the other device syncs.
	phone := newDevice(cl)
	if err := phone.readWhole(ctx, shard.ConversationsCollection("ua")); err != nil {
		t.Fatal(err)
	}
	conv := convs[0]
	if _, err := cl.MarkRead(ctx, "ua", conv, uint64(len(h.sent[conv]))); err != nil {
		t.Fatal(err) // from the desktop
	}
	if _, err := phone.catchUp(ctx, shard.ConversationsCollection("ua")); err != nil {
		t.Fatal(err)
	}
	s, err := client.DecodeConversation(conv, phone.state[shard.ConversationsCollection("ua")][conv].GetValue())
	if err != nil || s.GetUnread() != 0 || s.GetReadSeq() != uint64(len(h.sent[conv])) {
		t.Fatalf("the phone's record of %s after a read on the desktop: %+v %v", conv, s, err)
	}
}

// TestRetentionKeepsWhatActiveDevicesLack: a user timeline keeps its 10
// newest entries; a lagging active device keeps its entries until the cap
// (20 entries), and once it has not been seen for the inactivity time it
// holds nothing back.
func TestRetentionKeepsWhatActiveDevicesLack(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 2
		cfg.Clock = func() time.Time { return time.UnixMilli(now.Load()) }
		cfg.UserRetention = node.Retention{MaxEntries: 10}
		cfg.CursorRetentionCap = node.Retention{MaxEntries: 20}
		cfg.DeviceInactiveAfter = time.Hour
		cfg.RetentionInterval = 50 * time.Millisecond
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, d := range []struct{ device, class string }{{"phone", "phone"}, {"desk", "desktop"}} {
		if _, err := cl.Login(ctx, "keeper", d.device, d.class, "s-"+d.device, nil); err != nil {
			t.Fatal(err)
		}
	}
	appendN := func(n int) {
		for range n {
			if _, err := cl.Append(ctx, "keeper", []byte("x"), client.AppendOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	oldestIs := func(oldest uint64) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			page, err := cl.Pull(ctx, "keeper", 0, 1, client.Linearizable)
			if err != nil {
				return err
			}
			if page.GetOldestSeq() != oldest {
				return fmt.Errorf("oldest kept %d, want %d (head %d)", page.GetOldestSeq(), oldest, page.GetHeadSeq())
			}
			return nil
		})
	}
	// The phone acks 3 before the timeline passes the policy's 10 entries,
	// so no retention round can run before its cursor counts.
	appendN(3)
	if _, err := cl.Ack(ctx, "keeper", "phone", "keeper", 3); err != nil {
		t.Fatal(err)
	}
	appendN(12)
	if _, err := cl.Ack(ctx, "keeper", "desk", "keeper", 15); err != nil {
		t.Fatal(err)
	}
	oldestIs(4) // the phone lacks 4.. (the policy alone would keep 6..)
	appendN(15)
	oldestIs(11) // 30 entries: the cap keeps 20 whatever the phone lacks
	// An hour later only the desktop is seen (it acks): the phone is
	// inactive and the count alone decides.
	now.Add(time.Hour.Milliseconds() + 1)
	if _, err := cl.Ack(ctx, "keeper", "desk", "keeper", 30); err != nil {
		t.Fatal(err)
	}
	oldestIs(21)
	d, err := cl.ListDevices(ctx, "keeper", client.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	lags, seen := map[string]uint64{}, map[string]int64{}
	for _, a := range d.GetActive() {
		lags[a.GetSession().GetDeviceId()] = a.GetCursors()[0].GetLag()
		seen[a.GetSession().GetDeviceId()] = a.GetSession().GetLastSeenMs()
	}
	if lags["phone"] != 27 || lags["desk"] != 0 {
		t.Fatalf("lags %v, want phone 27 and desk 0", lags)
	}
	if seen["desk"] != now.Load() || now.Load()-seen["phone"] <= time.Hour.Milliseconds() {
		t.Fatalf("last seen %v at %d: the desk's ack should have made it seen now, the phone an hour ago", seen, now.Load())
	}
}

func TestDeviceBadInputChangesNothing(t *testing.T) {
	c := testcluster.New(t, 1, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Login(ctx, "bi", "p1", "phone", "s1", nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"unknown class", func() error { _, err := cl.Login(ctx, "bi", "p2", "fridge", "s2", nil); return err }, codes.InvalidArgument},
		{"empty user", func() error { _, err := cl.Login(ctx, "", "p2", "phone", "s2", nil); return err }, codes.InvalidArgument},
		{"empty device", func() error { _, err := cl.Login(ctx, "bi", "", "phone", "s2", nil); return err }, codes.InvalidArgument},
		{"empty session", func() error { _, err := cl.Login(ctx, "bi", "p2", "phone", "", nil); return err }, codes.InvalidArgument},
		{"derived user", func() error { _, err := cl.Login(ctx, "devices/bi", "p2", "phone", "s2", nil); return err }, codes.InvalidArgument},
		{"another device's session", func() error { _, err := cl.Login(ctx, "bi", "p2", "phone", "s1", nil); return err }, codes.FailedPrecondition},
		{"ack past the head", func() error { _, err := cl.Ack(ctx, "bi", "p1", "bi", 1); return err }, codes.InvalidArgument},
		{"ack another timeline", func() error { _, err := cl.Ack(ctx, "bi", "p1", "elsewhere", 0); return err }, codes.InvalidArgument},
		{"ack without a session", func() error { _, err := cl.Ack(ctx, "bi", "p9", "bi", 0); return err }, codes.FailedPrecondition},
		{"logout unknown", func() error { _, err := cl.Logout(ctx, "bi", "nope"); return err }, codes.NotFound},
		{"mark read empty conversation", func() error { _, err := cl.MarkRead(ctx, "bi", "", 1); return err }, codes.InvalidArgument},
		{"write a derived collection", func() error {
			_, err := cl.Write(ctx, shard.DevicesCollection("bi"), []*syncv1.RecordOp{client.Put("p1", []byte("x"))}, client.WriteOptions{})
			return err
		}, codes.InvalidArgument},
		{"append to device events", func() error {
			_, err := cl.Append(ctx, shard.DeviceEventsTimeline("bi"), []byte("forged"), client.AppendOptions{})
			return err
		}, codes.InvalidArgument},
	}
	before, err := cl.ListDevices(ctx, "bi", client.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if err := tc.call(); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	after, err := cl.ListDevices(ctx, "bi", client.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if after.GetEpoch() != before.GetEpoch() || len(after.GetActive()) != 1 || len(after.GetEnded()) != 0 {
		t.Fatalf("bad input changed the sessions: %v", after)
	}
	if ev, err := cl.Pull(ctx, shard.DeviceEventsTimeline("bi"), 0, 10, client.Linearizable); err != nil || len(ev.GetEntries()) != 0 {
		t.Fatalf("bad input wrote events: %v %v", ev, err)
	}
}
