package fsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// errRollback ends a fuzz transaction without committing it, so every input
// starts from the same state.
var errRollback = errors.New("rollback")

// fuzzSeeds are commands of every kind, valid and not, for the corpus.
func fuzzSeeds() []*fsmpb.Command {
	shardMap := &fsmpb.ShardMap{Version: 2, Groups: []*fsmpb.ShardGroup{
		{Id: 1, Ranges: []*fsmpb.SlotRange{{Start: 0, End: 2048}}, Replicas: []string{"n1", "n2"}, Creator: "n1"},
		{Id: 2, Ranges: []*fsmpb.SlotRange{{Start: 2048, End: 4096}}, Replicas: []string{"n2"}, Creator: "n2", Pinned: true},
	}}
	return []*fsmpb.Command{
		appendCmd("t1", "payload", "k-new", 2000),
		appendCmd("t1", "payload", "k1", 2000), // a duplicate
		{NowMs: 2000, Op: &fsmpb.Command_Append{Append: &fsmpb.Append{Timeline: "t2", Payload: []byte("x"), Metadata: map[string]string{"a": "b"}}}},
		sendCmd("c", "alice", []string{"bob", "dave"}, "hi", "s2", 2000, 1),
		deliverCmd(2000, &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: 2, DeliverySeq: 2, Payload: []byte("m2")}),
		deliverCmd(2000, &fsmpb.DeliveryItem{Timeline: "bob", Conversation: "c", ConversationSeq: 9, DeliverySeq: 9}),
		{Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{Conversation: "c", ConversationSeq: 1}}},
		{Op: &fsmpb.Command_Trim{Trim: &fsmpb.Trim{Items: []*fsmpb.TrimItem{{Timeline: "t1", KeepFrom: 2}}}}},
		registerCmd("n3", "127.0.0.1:7021", "127.0.0.1:7020"),
		registerCmd("n1", "127.0.0.1:9", ""),
		{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{ExpectedVersion: 1, Map: shardMap}}},
		{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: 3, Ranges: []*fsmpb.SlotRange{{Start: 0, End: 100}}}}},
		{IgnoreIfUnknown: true},
		nodeStateCmd("n2", NodeActive, NodeDraining, true),
		nodeStateCmd("n2", NodeDraining, NodeRemoved, false),
		nodeStateCmd("n1", NodeActive, NodeRemoved, false), // not a step
		appendCmd(strings.Repeat("t", 300), "", "", 1),
		loginCmd("bob", "p1", "phone", "s1", 2000),
		loginCmd("bob", "p2", "phone", "s2", 2000), // kicks s1
		loginCmd("bob", "p1", "tv", "s3", 2000),    // an unknown class
		{NowMs: 2000, Op: &fsmpb.Command_Logout{Logout: &fsmpb.Logout{User: "bob", SessionId: "s2"}}},
		ackCmd("bob", "p1", "bob", 1, 2000),
		markReadCmd("bob", "c", 1, 2000),
		{NowMs: 90000, Op: &fsmpb.Command_TouchDevices{TouchDevices: &fsmpb.TouchDevices{Items: []*fsmpb.DeviceRef{{User: "bob", DeviceId: "p1"}}}}},
		setVersionCmd(2, 0, 2000),
		setVersionCmd(3, 1, 2000), // a stale expectation
		probeCmd("k"),             // refused below its version, unknown to a release binary
	}
}

// FuzzApplyCommand feeds arbitrary log entries to the decoder and the
// dispatcher on a state holding timelines, a conversation, deliveries and
// nodes. Whatever the bytes, applying must not panic and must not fail
// like storage does (an error bbolt raised on the input); a command this
// binary cannot know may only ask for an upgrade. Applying is
// deterministic, and a rejected command leaves the state digest unchanged.
func FuzzApplyCommand(f *testing.F) {
	for _, c := range fuzzSeeds() {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\x08\x02\x52\x00")) // format 2: a newer binary's

	st := newFSM(f)
	var logs []*raft.Log
	for i, c := range []*fsmpb.Command{
		registerCmd("n1", "127.0.0.1:7001", "127.0.0.1:7000"),
		registerCmd("n2", "127.0.0.1:7011", "127.0.0.1:7010"),
		appendCmd("t1", "one", "k1", 1000),
		appendCmd("t1", "two", "", 1001),
		sendCmd("c", "alice", []string{"bob", "carol"}, "hi", "s1", 1002, 0),
		deliverCmd(1003, item("bob", "c", 1, "hi")),
	} {
		data, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
	}
	for _, r := range results(st.ApplyBatch(logs)) {
		if r.Err != nil {
			f.Fatal(r.Err)
		}
	}
	base, err := st.Digest()
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		type outcome struct {
			op, rejected, digest string
			failure              error
		}
		apply := func() outcome {
			var o outcome
			err := st.update(func(root *bolt.Bucket) error {
				var ch Changes
				res, err := applyCommand(root, &ch, data)
				o.failure = err
				if res != nil {
					o.op = res.Op
					if res.Err != nil {
						o.rejected = res.Err.Error()
					}
				}
				if o.digest, err = digestTx(root); err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatalf("transaction: %v", err)
			}
			return o
		}
		first, second := apply(), apply()
		if first.failure != nil && !errors.Is(first.failure, ErrNeedsUpgrade) {
			t.Fatalf("command content failed like storage would (a replica would stop): %v", first.failure)
		}
		if first.op != second.op || first.rejected != second.rejected || first.digest != second.digest || (first.failure == nil) != (second.failure == nil) {
			t.Fatalf("not deterministic: %+v then %+v", first, second)
		}
		if (first.rejected != "" || first.failure != nil) && first.digest != base {
			t.Fatalf("rejected command (%s: %s %v) changed the state", first.op, first.rejected, first.failure)
		}
	})
}
