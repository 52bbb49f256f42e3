package inproc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// groupDigests maps each running member hosting group id (the meta group
// included) to its replica's state digest.
func groupDigests(t *testing.T, c *testcluster.Cluster, id shard.GroupID) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range c.Members {
		if m.Node == nil {
			continue
		}
		g := m.Node.Group(id)
		if id == shard.MetaGroup {
			g = m.Node.MetaGroup()
		}
		if g == nil {
			continue
		}
		d, err := g.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out[m.ID] = d
	}
	return out
}

// requireServing checks that every member answers NodeStatus and that
// appends to timelines of every group succeed through a fresh client.
func requireServing(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range c.Members {
		if _, err := syncv1.NewAdminClient(dialRaw(t, m.GRPCAddr)).NodeStatus(ctx, &syncv1.NodeStatusRequest{}); err != nil {
			t.Fatalf("%s stopped serving: %v", m.ID, err)
		}
	}
	cl := c.Client()
	for i := range 16 {
		if _, err := cl.Append(ctx, fmt.Sprint("alive-", i), []byte("x"), client.AppendOptions{}); err != nil {
			t.Fatalf("append after the bad request: %v", err)
		}
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("got %v, want %v containing %q", err, code, msg)
	}
}

// TestHugeNodeIDJoinIsRefusedAndTheClusterStaysUp: a Join whose node id is
// 40,000 bytes (bbolt refuses keys over 32 KiB) used to be proposed to the
// meta group, stop every replica applying it, and stop them again on
// every restart. Sent to each node, it is refused, and nothing changes.
func TestHugeNodeIDJoinIsRefusedAndTheClusterStaysUp(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	before := groupDigests(t, c, shard.MetaGroup)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	huge := strings.Repeat("n", 40000)
	for _, m := range c.Members {
		_, err := syncv1.NewAdminClient(dialRaw(t, m.GRPCAddr)).Join(ctx, &syncv1.JoinRequest{
			NodeId: huge, RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2",
		})
		wantCode(t, err, codes.InvalidArgument, "node id is 40000 bytes; the limit is 64")
	}
	requireServing(t, c)
	if after := groupDigests(t, c, shard.MetaGroup); !maps.Equal(before, after) {
		t.Fatalf("meta state changed: %v -> %v", before, after)
	}
}

// TestOversizedCommandInTheLogIsRejectedOnEveryReplica bypasses every
// handler: commands that only a buggy or older proposer could write (keys
// bbolt refuses) go straight into the Raft logs of the meta group and of a
// data group. Every replica rejects them at apply the same way, no node
// stops, and replicas that replay them after a restart reject them again.
func TestOversizedCommandInTheLogIsRejectedOnEveryReplica(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	huge := strings.Repeat("k", 40000)

	meta := c.Members[c.WaitLeader(10*time.Second)].Node.MetaGroup()
	_, err := meta.ProposeUnchecked(ctx, &fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{
		NodeId: huge, RaftAddr: "127.0.0.1:1",
	}}})
	if !errors.Is(err, fsm.ErrInvalidArgument) {
		t.Fatalf("meta group: got %v, want a rejection", err)
	}
	const tl = "poisoned"
	id := c.Members[0].Node.ShardMap().GroupFor(tl)
	for _, cmd := range []*fsmpb.Command{
		{Op: &fsmpb.Command_Append{Append: &fsmpb.Append{Timeline: tl, IdempotencyKey: huge, DedupeWindowMs: 1000}}},
		{Op: &fsmpb.Command_Deliver{Deliver: &fsmpb.Deliver{Items: []*fsmpb.DeliveryItem{{Timeline: tl, Conversation: huge, ConversationSeq: 1, DeliverySeq: 1}}}}},
	} {
		// The reconciler may be handing the group to its preferred replica
		// just now: propose again to whoever leads until an answer comes.
		testutil.Eventually(t, 20*time.Second, func() error {
			data := c.Members[c.WaitGroupLeader(id, 10*time.Second)].Node.Group(id)
			_, err := data.ProposeUnchecked(ctx, cmd)
			switch {
			case errors.Is(err, fsm.ErrInvalidArgument):
				return nil
			case errors.Is(err, node.ErrNotLeader), errors.Is(err, node.ErrOutcomeUnknown):
				return err
			}
			t.Fatalf("group %d: got %v, want a rejection", id, err)
			return nil
		})
	}
	// Every replica applied past the bad entries and agrees.
	c.WaitConverged(30 * time.Second)
	for _, m := range c.Members {
		if addr := m.Node.GRPCAddrOf(huge); addr != "" {
			t.Fatalf("%s registered the huge id at %s", m.ID, addr)
		}
	}
	// A restart replays the log (the entries are past the last snapshot).
	c.Stop(1)
	c.Restart(1)
	c.WaitConverged(30 * time.Second)
	requireServing(t, c)
}

// TestForgedDeliveryIsRefusedAndRealSendsArrive: a Peer.Deliver that jumps
// past the member's mark (conversation and delivery seq 2^64-1) used to set
// the mark and make every later message of the conversation skip the
// member. It is refused, and so is one over the payload limit; the next
// real Send reaches the member.
func TestForgedDeliveryIsRefusedAndRealSendsArrive(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	send := func(payload string) {
		t.Helper()
		if _, err := cl.Send(ctx, "room", "bob", []string{"alice"}, []byte(payload), client.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	send("m1")
	waitEntries(t, cl, "alice", 1)
	before := c.Members[0].Node.ShardMap()
	group := before.GroupFor("alice")
	peer := syncv1.NewPeerClient(dialRaw(t, c.Members[0].GRPCAddr))
	forged := func(mut func(*syncv1.DeliveryItem)) error {
		it := &syncv1.DeliveryItem{
			Timeline: proto.String("alice"), Conversation: proto.String("room"),
			ConversationSeq: proto.Uint64(math.MaxUint64), DeliverySeq: proto.Uint64(math.MaxUint64),
			Sender: proto.String("mallory"), Payload: []byte("forged"),
		}
		mut(it)
		_, err := peer.Deliver(ctx, &syncv1.DeliverRequest{GroupId: proto.Uint64(uint64(group)), Items: []*syncv1.DeliveryItem{it}})
		return err
	}
	c.WaitConverged(20 * time.Second)
	digests := groupDigests(t, c, group)
	wantCode(t, forged(func(*syncv1.DeliveryItem) {}), codes.FailedPrecondition, "delivery out of order")
	wantCode(t, forged(func(it *syncv1.DeliveryItem) { it.DeliverySeq = nil }), codes.InvalidArgument, "no delivery seq")
	// Found by FuzzHandlers: a sender that is not UTF-8 could not even be
	// encoded into a command (INTERNAL).
	wantCode(t, forged(func(it *syncv1.DeliveryItem) {
		it.DeliverySeq, it.Sender = proto.Uint64(2), proto.String("\xff")
	}), codes.InvalidArgument, "sender: invalid argument: timeline id is not valid UTF-8")
	wantCode(t, forged(func(it *syncv1.DeliveryItem) {
		it.DeliverySeq = proto.Uint64(2)
		it.Payload = make([]byte, 1536<<10)
	}), codes.InvalidArgument, "payload is 1572864 bytes; the limit is 1048576")
	for _, bad := range []uint64{0, 999, math.MaxUint64} {
		_, err := peer.Deliver(ctx, &syncv1.DeliverRequest{GroupId: proto.Uint64(bad), Items: []*syncv1.DeliveryItem{{
			Timeline: proto.String("alice"), Conversation: proto.String("room"), ConversationSeq: proto.Uint64(2), DeliverySeq: proto.Uint64(2),
		}}})
		wantCode(t, err, codes.NotFound, "no such data group")
	}
	c.WaitConverged(20 * time.Second)
	if after := groupDigests(t, c, group); !maps.Equal(digests, after) {
		t.Fatalf("a refused delivery changed group %d: %v -> %v", group, digests, after)
	}

	send("m2")
	entries := waitEntries(t, cl, "alice", 2)
	for i, e := range entries {
		if e.GetConversation() != "room" || e.GetConversationSeq() != uint64(i+1) || string(e.GetPayload()) != fmt.Sprint("m", i+1) {
			t.Fatalf("alice entry %d: %v", i, e)
		}
	}
}

// waitEntries waits until a timeline holds n entries and returns them.
func waitEntries(t *testing.T, cl *client.Client, timeline string, n int) []*syncv1.Entry {
	t.Helper()
	var entries []*syncv1.Entry
	testutil.Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := cl.Pull(ctx, timeline, 0, 100, client.Linearizable)
		if err != nil {
			return err
		}
		if entries = res.GetEntries(); len(entries) != n {
			return fmt.Errorf("%s has %d entries, want %d", timeline, len(entries), n)
		}
		return nil
	})
	return entries
}

// TestJoinCannotHijackOrPollute: a Join reusing a member's id with other
// addresses, or naming a node that does not answer, or an address that is
// no address, is refused promptly, and the cluster's registry, meta
// configuration and shard map never change; a true retry still succeeds.
func TestJoinCannotHijackOrPollute(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	before := groupDigests(t, c, shard.MetaGroup)
	mapVersion := c.Members[0].Node.ShardMap().Version
	n2, n3 := c.Members[1], c.Members[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cases := []struct {
		name string
		req  *syncv1.JoinRequest
		code codes.Code
		msg  string
	}{
		{"an existing id at other addresses", &syncv1.JoinRequest{NodeId: n2.ID, RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2"},
			codes.FailedPrecondition, "node n2 is registered at raft address " + n2.RaftAddr + ", not 127.0.0.1:1"},
		{"another id at a member's addresses", &syncv1.JoinRequest{NodeId: "imposter", RaftAddr: n3.RaftAddr, GrpcAddr: n3.GRPCAddr},
			codes.FailedPrecondition, "belongs to node n3"},
		{"a node nobody runs", &syncv1.JoinRequest{NodeId: "ghost", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2"},
			codes.FailedPrecondition, "no syncstore node answered at gRPC address 127.0.0.1:2"},
		{"a raft address that is no address", &syncv1.JoinRequest{NodeId: "weird", RaftAddr: "not an address", GrpcAddr: "127.0.0.1:2"},
			codes.InvalidArgument, `raft address "not an address" is not host:port`},
		{"a node that answers with another id", &syncv1.JoinRequest{NodeId: "bogus", RaftAddr: "127.0.0.1:1", GrpcAddr: c.Members[0].GRPCAddr},
			codes.FailedPrecondition, "gRPC address " + c.Members[0].GRPCAddr + " belongs to node n1"},
	}
	for _, tc := range cases {
		for _, m := range c.Members { // through every node: followers forward to the meta leader
			start := time.Now()
			_, err := syncv1.NewAdminClient(dialRaw(t, m.GRPCAddr)).Join(ctx, tc.req)
			wantCode(t, err, tc.code, tc.msg)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s through %s: refused after %v", tc.name, m.ID, took)
			}
		}
	}
	if after := groupDigests(t, c, shard.MetaGroup); !maps.Equal(before, after) {
		t.Fatalf("meta state changed: %v -> %v", before, after)
	}
	for _, m := range c.Members {
		smap := m.Node.ShardMap()
		if smap.Version != mapVersion {
			t.Fatalf("%s: shard map v%d, was v%d", m.ID, smap.Version, mapVersion)
		}
		for _, g := range smap.Groups {
			if slices.ContainsFunc(g.Replicas, func(r string) bool { return !strings.HasPrefix(r, "n") }) {
				t.Fatalf("%s: group %d names %v", m.ID, g.ID, g.Replicas)
			}
		}
		members, err := m.Node.Members()
		if err != nil || len(members) != 3 {
			t.Fatalf("%s: meta configuration %+v %v", m.ID, members, err)
		}
	}
	requireServing(t, c)
	// A retry of a member's own join is not a conflict, and proposes nothing.
	meta := c.Members[c.WaitLeader(10*time.Second)].Node.MetaGroup()
	applied := meta.AppliedIndex()
	_, err := syncv1.NewAdminClient(dialRaw(t, c.Members[0].GRPCAddr)).Join(ctx, &syncv1.JoinRequest{
		NodeId: n2.ID, RaftAddr: n2.RaftAddr, GrpcAddr: n2.GRPCAddr, GossipAddr: n2.GossipAddr,
	})
	if err != nil {
		t.Fatalf("retried join of n2: %v", err)
	}
	if now := meta.AppliedIndex(); now != applied {
		t.Fatalf("a retried join moved the meta group from index %d to %d", applied, now)
	}
}
