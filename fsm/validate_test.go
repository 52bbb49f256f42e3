package fsm

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func registerCmd(id, raftAddr, grpcAddr string) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{NodeId: id, RaftAddr: raftAddr, GrpcAddr: grpcAddr}}}
}

// TestRejectedCommandsChangeNothing feeds every command kind content that
// breaks a limit, including what bbolt itself refuses (a key over 32 KiB):
// each is answered with an error, no replica-stopping failure, and the
// state is unchanged.
func TestRejectedCommandsChangeNothing(t *testing.T) {
	huge := strings.Repeat("x", 40000)
	ranges := func(rs ...[2]uint32) []*fsmpb.SlotRange {
		var out []*fsmpb.SlotRange
		for _, r := range rs {
			out = append(out, &fsmpb.SlotRange{Start: r[0], End: r[1]})
		}
		return out
	}
	shardMap := func(mut func(*fsmpb.ShardMap)) *fsmpb.Command {
		m := &fsmpb.ShardMap{Version: 2, Groups: []*fsmpb.ShardGroup{{Id: 1, Ranges: ranges([2]uint32{0, 4096}), Replicas: []string{"n1"}, Creator: "n1"}}}
		mut(m)
		return &fsmpb.Command{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{ExpectedVersion: 1, Map: m}}}
	}
	cases := []struct {
		name string
		cmd  *fsmpb.Command
		want error
	}{
		{"register a 40,000-byte node id", registerCmd(huge, "127.0.0.1:1", ""), ErrInvalidArgument},
		{"register an empty node id", registerCmd("", "127.0.0.1:1", ""), ErrInvalidArgument},
		{"register a node id with a slash", registerCmd("a/b", "127.0.0.1:1", ""), ErrInvalidArgument},
		{"register 'not an address'", registerCmd("n9", "not an address", ""), ErrInvalidArgument},
		{"register an address without host", registerCmd("n9", ":7401", ""), ErrInvalidArgument},
		{"register port 0", registerCmd("n9", "127.0.0.1:0", ""), ErrInvalidArgument},
		{"register a huge gRPC address", registerCmd("n9", "127.0.0.1:1", huge+":1"), ErrInvalidArgument},
		{"re-point a registered node", registerCmd("n1", "127.0.0.1:9999", "127.0.0.1:7000"), ErrNodeConflict},
		{"a second id at a registered raft address", registerCmd("n2", "127.0.0.1:7001", "127.0.0.1:7010"), ErrNodeConflict},
		{"append to a 40,000-byte timeline", appendCmd(huge, "p", "", 1), ErrInvalidArgument},
		{"append with a 40,000-byte key", appendCmd("t", "p", huge, 1), ErrInvalidArgument},
		{"append with a negative window", &fsmpb.Command{Op: &fsmpb.Command_Append{Append: &fsmpb.Append{Timeline: "t", DedupeWindowMs: -1}}}, ErrInvalidArgument},
		{"send from the conversation itself", sendCmd("c", "c", []string{"bob"}, "p", "", 1, 0), ErrInvalidArgument},
		{"send to the conversation itself", sendCmd("c", "alice", []string{"bob", "c"}, "p", "", 1, 0), ErrInvalidArgument},
		{"send to a 40,000-byte recipient", sendCmd("c", "alice", []string{huge}, "p", "", 1, 0), ErrInvalidArgument},
		{"deliver into the conversation itself", deliverCmd(1, item("c", "c", 1, "p")), ErrInvalidArgument},
		{"deliver without a delivery seq", deliverCmd(1, &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: 1}), ErrInvalidArgument},
		{"deliver from a 40,000-byte conversation", deliverCmd(1, item("bob", huge, 1, "p")), ErrInvalidArgument},
		{"delivery done of seq 0", &fsmpb.Command{Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{Conversation: "c"}}}, ErrInvalidArgument},
		{"trim keeping from 0", &fsmpb.Command{Op: &fsmpb.Command_Trim{Trim: &fsmpb.Trim{Items: []*fsmpb.TrimItem{{Timeline: "t"}}}}}, ErrInvalidArgument},
		{"ranges overlapping", &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: 5, Ranges: ranges([2]uint32{0, 10}, [2]uint32{5, 20})}}}, ErrInvalidArgument},
		{"ranges past the slot space", &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: 5, Ranges: ranges([2]uint32{0, 5000})}}}, ErrInvalidArgument},
		{"ranges of map version 0", &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{}}}, ErrInvalidArgument},
		{"shard map with a 40,000-byte replica", shardMap(func(m *fsmpb.ShardMap) { m.Groups[0].Replicas = []string{huge} }), ErrInvalidArgument},
		{"shard map with eight replicas", shardMap(func(m *fsmpb.ShardMap) {
			m.Groups[0].Replicas = []string{"a", "b", "c", "d", "e", "f", "g", "h"}
		}), ErrInvalidArgument},
		{"shard map with a bad creator", shardMap(func(m *fsmpb.ShardMap) { m.Groups[0].Creator = "not an id" }), ErrInvalidArgument},
		{"shard map with a slot unowned", shardMap(func(m *fsmpb.ShardMap) { m.Groups[0].Ranges = ranges([2]uint32{0, 4095}) }), ErrInvalidArgument},
	}
	h := newHarness(t)
	h.apply(registerCmd("n1", "127.0.0.1:7001", "127.0.0.1:7000"), appendCmd("t", "p", "", 1), sendCmd("c", "alice", []string{"bob"}, "p", "", 1, 0))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.digest()
			rs := h.apply(tc.cmd)
			if rs[0] == nil || !errors.Is(rs[0].Err, tc.want) {
				t.Fatalf("got %+v, want an error wrapping %v", rs[0], tc.want)
			}
			if h.digest() != before {
				t.Fatal("a rejected command changed the state")
			}
		})
	}
}

func TestRegisterNodeMayChangeItsGRPCAddressOnly(t *testing.T) {
	h := newHarness(t)
	rs := h.apply(
		registerCmd("n1", "127.0.0.1:7001", "127.0.0.1:7000"),
		registerCmd("n1", "127.0.0.1:7001", "127.0.0.1:7100"), // restarted on another gRPC port
		registerCmd("n2", "[::1]:7011", "syncd-2.example:7010"),
	)
	for i, r := range rs {
		if r.Err != nil {
			t.Fatalf("register %d: %v", i, r.Err)
		}
	}
	nodes, err := h.f.Nodes()
	if err != nil || len(nodes) != 2 || nodes[0].GRPCAddr != "127.0.0.1:7100" || nodes[1].RaftAddr != "[::1]:7011" {
		t.Fatalf("nodes %+v %v", nodes, err)
	}
}

// TestSendCountsDeliverySeqsPerMember: members that are not recipients of
// every message still get delivery seqs 1, 2, 3 … of their own.
func TestSendCountsDeliverySeqsPerMember(t *testing.T) {
	h := newHarness(t)
	h.apply(
		sendCmd("c", "alice", []string{"bob", "carol"}, "1", "", 1, 0),
		sendCmd("c", "alice", []string{"bob"}, "2", "", 2, 0),
		sendCmd("c", "dave", []string{"carol", "carol"}, "3", "", 3, 0),
		sendCmd("other", "alice", []string{"bob"}, "x", "", 4, 0),
	)
	jobs, err := h.f.Outbox("c", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		recipients []string
		seqs       []uint64
	}{
		{[]string{"bob", "carol", "alice"}, []uint64{1, 1, 1}},
		{[]string{"bob", "alice"}, []uint64{2, 2}},
		{[]string{"carol", "dave"}, []uint64{2, 1}},
	}
	if len(jobs) != len(want) {
		t.Fatalf("jobs %+v", jobs)
	}
	for i, w := range want {
		if !slices.Equal(jobs[i].Recipients, w.recipients) || !slices.Equal(jobs[i].DeliverySeqs, w.seqs) {
			t.Errorf("job %d: recipients %v seqs %v, want %v %v", i, jobs[i].Recipients, jobs[i].DeliverySeqs, w.recipients, w.seqs)
		}
	}
	if other, _ := h.f.Outbox("other", 10); len(other) != 1 || !slices.Equal(other[0].DeliverySeqs, []uint64{1, 1}) {
		t.Errorf("another conversation counts on its own: %+v", other)
	}
}

// TestDeliverRefusesJumps: a delivery more than one past the member's mark
// is refused as a whole and writes nothing, so a forged item cannot make
// real messages be skipped; the real next message still lands.
func TestDeliverRefusesJumps(t *testing.T) {
	h := newHarness(t)
	h.apply(deliverCmd(1, item("bob", "c", 1, "m1")), deliverCmd(2, item("bob", "c", 2, "m2")))
	forged := &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: math.MaxUint64, DeliverySeq: math.MaxUint64, Payload: []byte("forged")}
	jump := &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: 9, DeliverySeq: 4, Payload: []byte("m4")}
	for _, cmd := range []*fsmpb.Command{
		deliverCmd(3, forged),
		deliverCmd(3, jump),
		deliverCmd(3, item("carol", "c", 1, "m1"), forged), // one bad item refuses the batch
	} {
		before := h.digest()
		if rs := h.apply(cmd); !errors.Is(rs[0].Err, ErrDeliveryGap) {
			t.Fatalf("got %+v, want %v", rs[0], ErrDeliveryGap)
		}
		if h.digest() != before {
			t.Fatal("a refused delivery changed the state")
		}
	}
	// The real third message (conversation seq 7: bob was not a recipient of
	// 3..6) is delivery 3 for bob, and lands.
	real := &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: 7, DeliverySeq: 3, Payload: []byte("m3")}
	rs := h.apply(deliverCmd(4, real), deliverCmd(5, real))
	if rs[0].Err != nil || rs[0].Deliver.Written != 1 || rs[1].Err != nil || rs[1].Deliver.Skipped != 1 {
		t.Fatalf("real delivery and its re-delivery: %+v %+v", rs[0], rs[1])
	}
	bob := h.pullAll("bob")
	if len(bob) != 3 || string(bob[2].Payload) != "m3" || bob[2].ConversationSeq != 7 {
		t.Fatalf("bob %+v", bob)
	}
}

// A value damaged on disk is an error wherever it is read, never data: the
// entry a Pull would return, the counter an append reads, a dedupe record.
func TestDamagedValuesAreErrorsNotData(t *testing.T) {
	h := newHarness(t)
	h.apply(appendCmd("a", "first", "k1", 1), appendCmd("a", "second", "k2", 2))
	flip := func(key []byte) {
		t.Helper()
		err := h.f.update(func(root *bolt.Bucket) error {
			b := root.Bucket(bucketTimelines)
			v := bytes.Clone(b.Get(key))
			v[len(v)-1] ^= 0x01
			return b.Put(key, v)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tl := timelineKey("a")
	flip(entryKey(tl, 2))
	if res, err := h.f.Pull("a", 0, 10, 0); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("pull over a damaged entry: %+v, %v", res, err)
	}
	if res, err := h.f.Pull("a", 0, 1, 0); err != nil || len(res.Entries) != 1 || string(res.Entries[0].Payload) != "first" {
		t.Fatalf("pull of the intact entry before it: %+v, %v", res, err)
	}
	if _, err := h.f.History("a", 0, 10, 0); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("history over a damaged entry: %v", err)
	}
	flip(counterKey(tl))
	if _, err := h.f.Head("a"); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("head from a damaged counter: %v", err)
	}
	// Applying over a damaged counter is a storage failure (the replica
	// stops), not a rejection and not a seq taken from damaged bytes.
	var failure error
	err := h.f.update(func(root *bolt.Bucket) error {
		var ch Changes
		data, err := EncodeCommand(appendCmd("a", "third", "", 3))
		if err != nil {
			return err
		}
		_, failure = applyCommand(root, &ch, data)
		return errRollback
	})
	if !errors.Is(err, errRollback) || !errors.Is(failure, ErrCorruptState) {
		t.Fatalf("append over a damaged counter: %v, %v", err, failure)
	}
}
