package inproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/backup/take"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// partHook follows a backup as take.Run takes it, calling done with each
// part's name once the part is written, before the next one starts.
type partHook struct {
	take.NoProgress
	name string
	done func(part string)
}

func (h *partHook) Group(name string) { h.name = name }
func (h *partHook) PartDone()         { h.done(h.name) }

// backedUpOutbox lists the conversations with deliveries pending in a
// group's part of a backup.
func backedUpOutbox(t *testing.T, path string, id shard.GroupID) []string {
	t.Helper()
	r, err := backup.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pr, err := r.Part(backup.GroupPartName(uint64(id)))
	if err != nil {
		t.Fatal(err)
	}
	part := &backedUp{}
	if _, err := io.Copy(&part.data, pr); err != nil {
		t.Fatal(err)
	}
	convs, err := restoredFSM(t, part).OutboxConversations(100)
	if err != nil {
		t.Fatal(err)
	}
	return convs
}

// TestRestoreIntoANewCluster backs a cluster up while writers append, a
// conversation's fan-out is held half done, collections are written and
// devices are logged in, and restores the backup into a new three-node
// cluster: every append acknowledged before the backup is there; each
// group is the manifest's state (index and digest); seqs, collection
// versions and sessions go on from there; the held fan-out completes
// exactly once per member; and the two clusters stay apart.
func TestRestoreIntoANewCluster(t *testing.T) {
	const messages = 5
	var gate deliveryGate
	old := testcluster.NewNamed(t, "a", 3, func(cfg *node.Config) { gate.wrap(cfg) })
	cl := old.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// take.Run cuts the meta group, then the data groups by ascending id:
	// the held conversation goes on the first group cut, so that its
	// fan-out is cut as early as it can be.
	first := old.Members[0].Node.ShardMap()
	convGroup := shard.GroupID(0)
	for _, g := range first.Groups {
		if len(g.Ranges) > 0 && (convGroup == 0 || g.ID < convGroup) {
			convGroup = g.ID
		}
	}
	conv := pickName(t, "room:restore-%d", func(name string) bool { return first.GroupFor(name) == convGroup })
	gate.mu.Lock() // the gate reads only under its lock; no delivery of conv has happened yet
	gate.only = conv
	gate.mu.Unlock()

	// Collections and sessions, then a conversation whose deliveries to
	// other nodes are held at the gate.
	const collections = 40
	versions := map[string]uint64{}
	for i := range collections {
		coll := fmt.Sprintf("profile:%d", i)
		for j := range 3 {
			resp, err := cl.Write(ctx, coll, []*syncv1.RecordOp{client.Put(fmt.Sprintf("k%d", j), []byte("v"))}, client.WriteOptions{})
			if err != nil {
				t.Fatalf("write %s: %v", coll, err)
			}
			versions[coll] = resp.GetVersion()
		}
	}
	sessions := map[string]string{}
	for i := range 6 {
		user := fmt.Sprintf("dev-user:%d", i)
		if _, err := cl.Login(ctx, user, "phone-1", "phone", "s-"+user, nil); err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		sessions[user] = "s-" + user
	}
	members := numbered("member:%d", 40)
	gate.close()
	for i := 1; i <= messages; i++ {
		if _, err := cl.Send(ctx, conv, members[0], members[1:], fmt.Appendf(nil, "message %d", i), client.AppendOptions{IdempotencyKey: fmt.Sprint("m", i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if holder, _ := gate.holder(); holder == "" {
			return errors.New("no delivery held yet")
		}
		return nil
	})

	w := startWorkload(t, cl, "restore", 4, numbered("rtl:%d", 30), 2*time.Second)
	w.progress(t, 200)
	w.mu.Lock()
	before := maps.Clone(w.acks)
	w.mu.Unlock()

	// A second conversation, on a group cut after conv's, is cut before its
	// third message is sent; the members' groups cut after it (higher ids)
	// hold that message. It goes on the lowest group above conv's that
	// some member's group is above, so that most members are cut after it.
	smap := old.Members[0].Node.ShardMap()
	if g := smap.GroupFor(conv); g != convGroup {
		t.Fatalf("%s moved from group %d to %d", conv, convGroup, g)
	}
	bmembers := numbered("between-member:%d", 40) // their timelines hold only this conversation
	lastMember := shard.GroupID(0)
	for _, u := range bmembers[1:] {
		lastMember = max(lastMember, smap.GroupFor(u))
	}
	betweenGroup := shard.GroupID(0)
	for _, g := range smap.Groups {
		if len(g.Ranges) > 0 && g.ID > convGroup && g.ID < lastMember && (betweenGroup == 0 || g.ID < betweenGroup) {
			betweenGroup = g.ID
		}
	}
	if betweenGroup == 0 {
		t.Fatalf("no group lies between %s's (%d) and the last of its members' (%d): the raise would not be tested", conv, convGroup, lastMember)
	}
	between := pickName(t, "room:between-%d", func(name string) bool { return smap.GroupFor(name) == betweenGroup })
	sendBetween := func(cl *client.Client, i int) {
		t.Helper()
		if _, err := cl.Send(ctx, between, bmembers[0], bmembers[1:], fmt.Appendf(nil, "between %d", i), client.AppendOptions{IdempotencyKey: fmt.Sprint("b", i)}); err != nil {
			t.Fatalf("send %d to %s: %v", i, between, err)
		}
	}
	sendBetween(cl, 1)
	sendBetween(cl, 2)
	path := filepath.Join(t.TempDir(), "cluster.backup")
	sent3 := false
	hook := &partHook{done: func(part string) {
		if part == backup.GroupPartName(uint64(betweenGroup)) && !sent3 {
			sent3 = true
			sendBetween(cl, 3)
			waitHeads(t, cl, bmembers[1:], between, 3)
		}
	}}
	res, err := take.Run(ctx, take.ClusterSource(cl, 10*time.Second, time.Minute), take.Options{Out: path, Progress: hook})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	// A second attempt would cut every group after message 3.
	if !sent3 || res.Attempts != 1 || res.ShardMapVersion != smap.Version {
		t.Fatalf("backup %+v (message 3 sent: %v): want one attempt at shard map v%d, message 3 sent after group %d's part", res, sent3, smap.Version, betweenGroup)
	}
	man := res.Manifest
	w.progress(t, 50) // the writers went on through the backup
	w.finish()
	gate.open()
	if convs := backedUpOutbox(t, path, convGroup); !slices.Contains(convs, conv) {
		t.Fatalf("the backup's group %d holds no pending fan-out of %s (outbox: %v): the test would not test it", convGroup, conv, convs)
	}

	// The new cluster: r1 restores, r2 and r3 join it empty.
	restoreOnce := true
	fresh := testcluster.NewNamed(t, "r", 3, func(cfg *node.Config) {
		if cfg.NodeID == "r1" && restoreOnce {
			cfg.RestoreFrom, restoreOnce = path, false
		}
	})
	r1 := fresh.Members[0].Node
	restored := r1.Restored()
	if len(restored) != len(man.Parts) {
		t.Fatalf("restored %d groups, the backup holds %d", len(restored), len(man.Parts))
	}
	for _, p := range man.Parts {
		got := restored[shard.GroupID(p.GroupID)]
		if got.AppliedIndex != p.AppliedIndex || got.Digest != p.Digest || p.AppliedIndex == 0 {
			t.Fatalf("group %d restored at %d with digest %s; the manifest says %d, %s", p.GroupID, got.AppliedIndex, got.Digest, p.AppliedIndex, p.Digest)
		}
	}
	newID, oldID := r1.ClusterID(), old.Members[0].Node.ClusterID()
	if newID == "" || newID == oldID {
		t.Fatalf("the restored cluster's id is %q, the old one's %q", newID, oldID)
	}
	for _, m := range fresh.Members {
		if got := m.Node.ClusterID(); got != newID {
			t.Fatalf("%s is in cluster %q, want %q", m.ID, got, newID)
		}
	}

	// The registry and the shard map name only the new cluster's nodes.
	records, err := r1.NodeRecords()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range records {
		if !strings.HasPrefix(nd.ID, "r") {
			t.Fatalf("the restored registry lists %s of the old cluster: %+v", nd.ID, records)
		}
	}
	if m := r1.ShardMap(); m.Version <= smap.Version {
		t.Fatalf("the restored shard map is at v%d, the backup's at v%d: clients would keep the old routes", m.Version, smap.Version)
	}
	for _, g := range r1.ShardMap().Groups {
		for _, id := range append([]string{g.Creator}, g.Replicas...) {
			if !strings.HasPrefix(id, "r") {
				t.Fatalf("restored group %d names %s of the old cluster: %+v", g.ID, id, g)
			}
		}
	}

	rc := fresh.Client()
	// Every append acknowledged before the backup is there, and seqs go on.
	heads := map[string]uint64{}
	for key, a := range before {
		page, err := rc.Pull(ctx, a.timeline, a.seq-1, 1, client.Linearizable)
		if err != nil {
			t.Fatalf("pull %s: %v", a.timeline, err)
		}
		if e := page.GetEntries(); len(e) != 1 || e[0].GetSeq() != a.seq || string(e[0].GetPayload()) != a.payload {
			t.Fatalf("append %s (%s seq %d), acknowledged before the backup, is not in the restore: %v", key, a.timeline, a.seq, e)
		}
		heads[a.timeline] = max(heads[a.timeline], a.seq)
	}
	for tl := range heads {
		head, err := rc.Head(ctx, tl, client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rc.Append(ctx, tl, []byte("after restore"), client.AppendOptions{})
		if err != nil {
			t.Fatalf("append to %s after the restore: %v", tl, err)
		}
		if head < heads[tl] || resp.GetSeq() != head+1 {
			t.Fatalf("%s: head %d after the restore (acknowledged up to %d before it), the next append got seq %d", tl, head, heads[tl], resp.GetSeq())
		}
	}
	// A retried append of a key acknowledged before the backup is still a
	// duplicate: the dedupe records came along.
	for key, a := range before {
		resp, err := rc.Append(ctx, a.timeline, []byte(a.payload), client.AppendOptions{IdempotencyKey: key})
		if err != nil || !resp.GetDeduplicated() || resp.GetSeq() != a.seq {
			t.Fatalf("retry of %s after the restore: %v, %v; want the original seq %d, deduplicated", key, resp, err, a.seq)
		}
		break
	}
	// Collections go on at version+1; sessions are still valid.
	for coll, v := range versions {
		resp, err := rc.Write(ctx, coll, []*syncv1.RecordOp{client.Put("after", []byte("v"))}, client.WriteOptions{})
		if err != nil || resp.GetVersion() != v+1 {
			t.Fatalf("write %s after the restore: version %d (%v); it stood at %d", coll, resp.GetVersion(), err, v)
		}
	}
	for user, sess := range sessions {
		resp, err := rc.ValidateSession(ctx, user, sess, client.Linearizable)
		if err != nil || resp.GetState() != syncv1.SessionState_SESSION_STATE_VALID {
			t.Fatalf("session %s of %s after the restore: %v, %v", sess, user, resp, err)
		}
	}
	// The fan-out held at the backup completes, once per member.
	waitMembersHave(t, rc, members[1:], conv, messages)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, m := range fresh.Members {
			if g := m.Node.Group(convGroup); g != nil {
				if pending, err := g.PendingDeliveries(); err != nil || pending {
					return fmt.Errorf("%s still has deliveries pending (%v)", m.ID, err)
				}
			}
		}
		return nil
	})
	waitMembersHave(t, rc, members[1:], conv, messages)

	// The conversation cut before its members is raised to what they hold:
	// its next message takes a new seq and reaches every member once.
	if head, err := rc.Head(ctx, between, client.Linearizable); err != nil || head != 3 {
		t.Fatalf("%s's head after the restore: %d, %v; want 3, raised to its members' deliveries", between, head, err)
	}
	resp, err := rc.Send(ctx, between, bmembers[0], bmembers[1:], []byte("between 4"), client.AppendOptions{IdempotencyKey: "b4"})
	if err != nil || resp.GetSeq() != 4 {
		t.Fatalf("send after the restore: %v, %v; want seq 4", resp, err)
	}
	waitHeads(t, rc, bmembers[1:], between, 4)
	early := 0
	for _, u := range bmembers[1:] {
		got := conversationSeqs(t, rc, u, between)
		later := smap.GroupFor(u) > betweenGroup // take.Run cuts the groups by ascending id
		want := []uint64{1, 2, 4}
		if later {
			want = []uint64{1, 2, 3, 4}
		} else {
			early++
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s (group %d, cut after %s's: %v) holds %s's messages %v, want %v", u, smap.GroupFor(u), between, later, between, got, want)
		}
	}
	if early == len(bmembers)-1 {
		t.Fatalf("no member of %s is on a group cut after its own: the raise is not tested", between)
	}
	t.Logf("%s on group %d, %s on group %d; %d of its %d members on groups cut after it", conv, convGroup, between, betweenGroup, len(bmembers)-1-early, len(bmembers)-1)

	checkClustersApart(t, old, fresh)
}

// pickName is the first of format's names (format takes a number) that
// fits.
func pickName(t *testing.T, format string, fits func(string) bool) string {
	t.Helper()
	for i := range 10000 {
		if name := fmt.Sprintf(format, i); fits(name) {
			return name
		}
	}
	t.Fatalf("no name of the form %q fits", format)
	return ""
}

// conversationSeqs lists the conversation seqs of conv's messages in a
// user's timeline, in timeline order.
func conversationSeqs(t *testing.T, cl *client.Client, user, conv string) []uint64 {
	t.Helper()
	page, err := cl.Pull(context.Background(), user, 0, 1000, client.Linearizable)
	if err != nil {
		t.Fatalf("pull %s: %v", user, err)
	}
	var seqs []uint64
	for _, e := range page.GetEntries() {
		if e.GetConversation() == conv {
			seqs = append(seqs, e.GetConversationSeq())
		}
	}
	return seqs
}

// waitHeads waits until every user's timeline holds conv's message n.
func waitHeads(t *testing.T, cl *client.Client, users []string, conv string, n uint64) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, u := range users {
			if seqs := conversationSeqs(t, cl, u, conv); !slices.Contains(seqs, n) {
				return fmt.Errorf("%s holds %s's messages %v, waiting for %d", u, conv, seqs, n)
			}
		}
		return nil
	})
}

// checkClustersApart checks that a node of one cluster cannot join the
// other, in either direction, that their Raft ports refuse each other
// (a membership change forced past Join), and that neither's groups or
// gossip list a node of the other. a's ids start with "a", b's with "r".
func checkClustersApart(t *testing.T, a, b *testcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pair := range [][2]*testcluster.Cluster{{a, b}, {b, a}} {
		from, into := pair[0].Members[1], pair[1]
		err := into.Client().Admin(ctx, func(ctx context.Context, ac syncv1.AdminClient) error {
			_, err := ac.Join(ctx, &syncv1.JoinRequest{NodeId: from.ID, RaftAddr: from.RaftAddr, GrpcAddr: from.GRPCAddr,
				GossipAddr: from.GossipAddr, ClusterId: from.Node.ClusterID()})
			return err
		})
		if !errors.Is(err, client.ErrFailedPrecondition) {
			t.Fatalf("%s (cluster %s) joining cluster %s: %v, want FAILED_PRECONDITION", from.ID, from.Node.ClusterID(),
				into.Members[0].Node.ClusterID(), err)
		}
		members, err := into.Members[0].Node.Members()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(members, func(m node.Member) bool { return m.ID == from.ID }) {
			t.Fatalf("%s is registered in the other cluster", from.ID)
		}
	}
	noneOf(t, a, "r")
	noneOf(t, b, "a")
	// A forced add leaves the adder's configuration listing the target, so
	// only the target's side is checked after each.
	forcedAddRefused(t, a, b, b.Members[2])
	noneOf(t, b, "a")
	// The first add registered b's node in a, whose leader then places
	// groups on it (a new shard map): that must be over before a's meta
	// state is taken as the one the second add must not change.
	metaSettled(t, a)
	forcedAddRefused(t, b, a, a.Members[2])
}

// metaSettled waits until c's meta state holds still: every replica at
// one state, unchanged while every member does two reconcile rounds
// (where the meta leader reacts to what changed).
func metaSettled(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	var since map[string]string
	rounds := map[string]uint64{}
	testutil.Eventually(t, 20*time.Second, func() error {
		now := groupDigests(t, c, shard.MetaGroup)
		if len(slices.Compact(slices.Sorted(maps.Values(now)))) != 1 || !maps.Equal(now, since) {
			since = now
			for _, m := range c.Members {
				rounds[m.ID] = m.Node.ReconcileRounds()
			}
			return fmt.Errorf("the meta state is changing: %v", now)
		}
		for _, m := range c.Members {
			if n := m.Node.ReconcileRounds(); n < rounds[m.ID]+2 {
				return fmt.Errorf("%s has done %d reconcile rounds since the meta state held still", m.ID, n-rounds[m.ID])
			}
		}
		return nil
	})
}
