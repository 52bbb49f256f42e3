package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// fuzzMethods are the RPCs FuzzHandlers drives; the first byte of an input
// picks one (modulo their number), so a new RPC is fuzzed without being
// told, though the corpus check below asks for a seed for it.
var fuzzMethods = testutil.Methods(syncv1.Sync_ServiceDesc, syncv1.Admin_ServiceDesc, syncv1.Peer_ServiceDesc, syncv1.Records_ServiceDesc, syncv1.Devices_ServiceDesc)

// clientFacing are the codes a request may be answered with, besides OK.
// INTERNAL and UNKNOWN mean a bug on the server's side.
var clientFacing = map[codes.Code]bool{
	codes.InvalidArgument:    true,
	codes.NotFound:           true,
	codes.FailedPrecondition: true,
	codes.OutOfRange:         true,
	codes.ResourceExhausted:  true,
	codes.Aborted:            true,
	codes.Unavailable:        true,
	codes.DeadlineExceeded:   true,
	codes.AlreadyExists:      true,
}

const (
	callTimeout = 2 * time.Second
	// joinTimeout is shorter: a Join may wait for a node that is not there.
	joinTimeout = 500 * time.Millisecond
	// endOfStream ends every Subscribe input: it does not decode, so the
	// server ends the stream (INVALID_ARGUMENT) once it has applied every
	// message before it; the stream would go on forever otherwise.
	endOfStream = "\x00"
)

// seedRequests is a valid request of each method, the seed corpus.
var seedRequests = map[string]proto.Message{
	"/syncstore.v1.Sync/Append":  &syncv1.AppendRequest{Timeline: proto.String("fuzz"), Payload: []byte("p"), IdempotencyKey: proto.String("k"), Metadata: map[string]string{"a": "b"}},
	"/syncstore.v1.Sync/Pull":    &syncv1.PullRequest{Timeline: proto.String("fuzz"), AfterSeq: proto.Uint64(0), Limit: proto.Uint32(10)},
	"/syncstore.v1.Sync/Head":    &syncv1.HeadRequest{Timeline: proto.String("fuzz"), Consistency: syncv1.Consistency_CONSISTENCY_STALE.Enum()},
	"/syncstore.v1.Sync/Send":    &syncv1.SendRequest{Conversation: proto.String("room"), Sender: proto.String("alice"), Recipients: []string{"bob", "carol"}, Payload: []byte("hi")},
	"/syncstore.v1.Sync/History": &syncv1.HistoryRequest{Timeline: proto.String("room"), Limit: proto.Uint32(10)},
	"/syncstore.v1.Sync/Subscribe": &syncv1.SubscribeRequest{
		Add: []*syncv1.SubscribeFrom{{Timeline: proto.String("fuzz")}, {Timeline: proto.String("bob"), AfterSeq: proto.Uint64(1)}},
	},
	"/syncstore.v1.Admin/Join":           &syncv1.JoinRequest{NodeId: "n9", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:1", GossipAddr: "127.0.0.1:1"},
	"/syncstore.v1.Admin/NodeStatus":     &syncv1.NodeStatusRequest{},
	"/syncstore.v1.Admin/ClusterStatus":  &syncv1.ClusterStatusRequest{},
	"/syncstore.v1.Admin/ShardMap":       &syncv1.ShardMapRequest{},
	"/syncstore.v1.Admin/Digests":        &syncv1.DigestsRequest{},
	"/syncstore.v1.Admin/ListNodes":      &syncv1.ListNodesRequest{},
	"/syncstore.v1.Admin/RemoveNode":     &syncv1.RemoveNodeRequest{NodeId: "n9"},
	"/syncstore.v1.Admin/TransferLeader": &syncv1.TransferLeaderRequest{GroupId: 1, To: "n1"},
	"/syncstore.v1.Admin/MoveReplica":    &syncv1.MoveReplicaRequest{GroupId: 1, From: "n1", To: "n9"},
	"/syncstore.v1.Admin/BackupGroup":    &syncv1.BackupGroupRequest{GroupId: 1},
	// A version no binary of this build supports: refused before anything
	// is asked or proposed.
	"/syncstore.v1.Admin/FinalizeUpgrade": &syncv1.FinalizeUpgradeRequest{Version: 99},
	"/syncstore.v1.Admin/UpgradeProbe":    &syncv1.UpgradeProbeRequest{Key: "k", Note: "n"},
	// Moves and new groups that are refused: a run that moved slots or made
	// groups would spend its time on them.
	"/syncstore.v1.Admin/MoveSlots":      &syncv1.MoveSlotsRequest{Ranges: []*syncv1.SlotRange{{Start: 0, End: 16}}, TargetGroup: 99},
	"/syncstore.v1.Admin/AbortMove":      &syncv1.AbortMoveRequest{MoveId: 99},
	"/syncstore.v1.Admin/ListMoves":      &syncv1.ListMovesRequest{},
	"/syncstore.v1.Admin/AddGroups":      &syncv1.AddGroupsRequest{Count: 0},
	"/syncstore.v1.Admin/SplitGroup":     &syncv1.SplitGroupRequest{GroupId: 99},
	"/syncstore.v1.Admin/RebalanceSlots": &syncv1.RebalanceSlotsRequest{},
	"/syncstore.v1.Peer/Move":            &syncv1.MoveRequest{GroupId: 4, Step: mustMarshal(&fsmpb.MoveStep{Step: &fsmpb.MoveStep_ImportState{ImportState: 99}})},
	// Of the 8 groups of a new cluster, group 4 owns bob's slot.
	"/syncstore.v1.Peer/Deliver": &syncv1.DeliverRequest{GroupId: proto.Uint64(4), Items: []*syncv1.DeliveryItem{
		{Timeline: proto.String("bob"), Conversation: proto.String("room"), ConversationSeq: proto.Uint64(1), Sender: proto.String("alice"), Payload: []byte("hi"), DeliverySeq: proto.Uint64(1)},
	}},
	"/syncstore.v1.Peer/DigestAt": &syncv1.DigestAtRequest{GroupId: 4, Index: 10},
	// A group this single node does not have: fencing one it has would
	// leave the rest of the run with a replica that serves nothing.
	"/syncstore.v1.Peer/Fence": &syncv1.FenceRequest{GroupId: 99, Reason: "fuzz"},
	"/syncstore.v1.Peer/Copy": &syncv1.CopyRequest{GroupId: proto.Uint64(4), Items: []*syncv1.CopyItem{
		{Collection: proto.String("bob"), Key: proto.String("alice"), Value: []byte("v"), Source: proto.String("profile/alice"), SourceVersion: proto.Uint64(1)},
	}},
	"/syncstore.v1.Records/Write": &syncv1.WriteRequest{Collection: proto.String("friends/fuzz"), Ops: []*syncv1.RecordOp{
		{Key: proto.String("a"), Value: []byte("v")}, {Key: proto.String("b"), Delete: proto.Bool(true)},
	}, Conditions: []*syncv1.RecordCondition{{Key: proto.String("a"), Version: proto.Uint64(0)}}, IdempotencyKey: proto.String("k")},
	"/syncstore.v1.Records/Get":  &syncv1.GetRequest{Collection: proto.String("friends/fuzz"), Limit: proto.Uint32(10)},
	"/syncstore.v1.Records/Sync": &syncv1.RecordSyncRequest{Collection: proto.String("friends/fuzz"), SinceVersion: proto.Uint64(0), Limit: proto.Uint32(10)},
	"/syncstore.v1.Records/SyncMany": &syncv1.SyncManyRequest{Collections: []*syncv1.RecordSyncRequest{
		{Collection: proto.String("friends/fuzz"), Limit: proto.Uint32(10)}, {Collection: proto.String("members/g1"), SinceVersion: proto.Uint64(3), Limit: proto.Uint32(5)},
	}},
	"/syncstore.v1.Devices/Login": &syncv1.LoginRequest{User: proto.String("fuzz"), DeviceId: proto.String("p1"), DeviceClass: proto.String("phone"),
		SessionId: proto.String("s1"), Metadata: map[string]string{"app": "1"}},
	"/syncstore.v1.Devices/Logout":          &syncv1.LogoutRequest{User: proto.String("fuzz"), SessionId: proto.String("s1")},
	"/syncstore.v1.Devices/ValidateSession": &syncv1.ValidateSessionRequest{User: proto.String("fuzz"), SessionId: proto.String("s1")},
	"/syncstore.v1.Devices/Ack":             &syncv1.AckRequest{User: proto.String("fuzz"), DeviceId: proto.String("p1"), Timeline: proto.String("fuzz"), Seq: proto.Uint64(1)},
	"/syncstore.v1.Devices/Cursors":         &syncv1.CursorsRequest{User: proto.String("fuzz"), DeviceId: proto.String("p1")},
	"/syncstore.v1.Devices/ListDevices":     &syncv1.ListDevicesRequest{User: proto.String("fuzz")},
	"/syncstore.v1.Devices/MarkRead":        &syncv1.MarkReadRequest{User: proto.String("bob"), Conversation: proto.String("room"), Seq: proto.Uint64(1)},
	"/syncstore.v1.Devices/Conversations":   &syncv1.ConversationsRequest{User: proto.String("bob"), Limit: proto.Uint32(10)},
}

// seedInputs encodes each seed request as a FuzzHandlers input, by file name.
func seedInputs(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for i, m := range fuzzMethods {
		req, ok := seedRequests[m.FullName]
		if !ok {
			t.Fatalf("no seed request for %s: add one to seedRequests", m.FullName)
		}
		body, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if m.Stream != nil && m.Stream.ClientStreams {
			body = append([]byte{byte(len(body))}, body...) // one message
		}
		name := strings.ReplaceAll(strings.TrimPrefix(m.FullName, "/syncstore.v1."), "/", ".")
		out[name] = append([]byte{byte(i)}, body...)
	}
	return out
}

const corpusDir = "testdata/fuzz/FuzzHandlers"

// TestFuzzHandlersCorpus checks that the committed seed corpus holds a
// valid request of every method. SYNCSTORE_WRITE_FUZZ_CORPUS=1 writes it.
func TestFuzzHandlersCorpus(t *testing.T) {
	for name, in := range seedInputs(t) {
		file := filepath.Join(corpusDir, name)
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(in)) + ")\n"
		if os.Getenv("SYNCSTORE_WRITE_FUZZ_CORPUS") == "1" {
			if err := os.MkdirAll(corpusDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale (%v): run SYNCSTORE_WRITE_FUZZ_CORPUS=1 go test -run TestFuzzHandlersCorpus ./rpc/server", file, err)
		}
	}
}

// FuzzHandlers sends arbitrary requests to every RPC of one in-process
// node through a real gRPC connection. The first byte picks the method,
// the rest is the protobuf body, sent as is (what the server decodes is
// then exactly what the fuzzer wrote, valid or not). For Subscribe the rest
// is a list of messages, each after a length byte, sent on one stream.
// Every answer must be OK or a client-facing code, a body that does not
// decode must be INVALID_ARGUMENT, and an INVALID_ARGUMENT must leave every
// replica as it was. A panic in a handler fails the run (the node is in
// this process).
func FuzzHandlers(f *testing.F) {
	// The seeds, a valid request of each method, are the files under
	// testdata (TestFuzzHandlersCorpus keeps them current); here, a few
	// that do not decode, on a unary and on a streaming method.
	seedInputs(f)
	f.Add([]byte{0, 0x0a, 0x7f})
	f.Add([]byte{5, 2, 0x0f, 0x01})

	c := testcluster.New(f, 1, nil)
	// Until each group has made a new leader's commands (its ranges, the
	// cluster version), its applied index moves on its own, which a
	// rejected call would be blamed for.
	c.WaitPlaced(30 * time.Second)
	n := c.Members[0].Node
	conn, err := grpc.NewClient(c.Members[0].GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	sink := startSink(f)

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		m := fuzzMethods[int(in[0])%len(fuzzMethods)]
		var msgs [][]byte
		if m.Stream != nil && m.Stream.ClientStreams {
			msgs = append(splitMessages(in[1:]), []byte(endOfStream))
		} else {
			msgs = [][]byte{in[1:]}
			if m.FullName == "/syncstore.v1.Admin/Join" {
				msgs[0] = confineJoin(msgs[0], sink)
			}
		}
		// The first message that does not decode, if any: the server
		// must reject it, and so the call, as INVALID_ARGUMENT.
		undecodable := -1
		for i, b := range msgs {
			if proto.Unmarshal(b, m.Request.New().Interface()) != nil {
				undecodable = i
				break
			}
		}

		before := settledStates(t, n, false)
		err := call(conn, m, msgs)
		st := status.Convert(err)
		t.Logf("%s: %v %q", m.FullName, st.Code(), st.Message())
		if st.Code() != codes.OK && !clientFacing[st.Code()] {
			t.Fatalf("%s answered %v %q (input %q)", m.FullName, st.Code(), st.Message(), in)
		}
		decodeError := st.Code() == codes.InvalidArgument && strings.HasPrefix(st.Message(), "request body is not a valid ")
		bidi := m.Stream != nil && m.Stream.ClientStreams
		switch {
		case !bidi && undecodable == 0 && !decodeError:
			t.Fatalf("%s: the body does not decode, but the answer is %v %q", m.FullName, st.Code(), st.Message())
		case !bidi && undecodable < 0 && decodeError:
			t.Fatalf("%s: the body decodes, but the server says %q", m.FullName, st.Message())
		case bidi && undecodable == 0 && !decodeError:
			t.Fatalf("%s: the first message does not decode, but the answer is %v %q", m.FullName, st.Code(), st.Message())
		case bidi && st.Code() == codes.OK:
			t.Fatalf("%s: the stream ended OK after a message that does not decode", m.FullName)
		}
		if st.Code() != codes.InvalidArgument {
			return
		}
		if changed := diffStates(before, mustStates(t, n)); changed != "" {
			// The node may have been busy with an earlier input's effects
			// (a commit after its deadline, say): ask again on a settled
			// node before calling it a finding.
			before = settledStates(t, n, true)
			err := call(conn, m, msgs)
			changed = diffStates(before, mustStates(t, n))
			if status.Code(err) == codes.InvalidArgument && changed != "" {
				t.Fatalf("%s was rejected (%v) but changed the state: %s (input %q)", m.FullName, err, changed, in)
			}
		}
	})
}

// call sends msgs as method m's request(s) and returns how the call ended.
func call(conn *grpc.ClientConn, m testutil.Method, msgs [][]byte) error {
	timeout := callTimeout
	if m.FullName == "/syncstore.v1.Admin/Join" {
		timeout = joinTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if m.Stream == nil {
		var resp []byte
		return conn.Invoke(ctx, m.FullName, msgs[0], &resp, testutil.Raw)
	}
	cs, err := conn.NewStream(ctx, m.Stream, m.FullName, testutil.Raw)
	if err != nil {
		return err
	}
	for _, b := range msgs {
		if cs.SendMsg(b) != nil {
			break // the stream ended: RecvMsg says how
		}
		if !m.Stream.ClientStreams {
			break // one request, a stream of answers (BackupGroup)
		}
	}
	cs.CloseSend()
	for {
		var resp []byte
		if err := cs.RecvMsg(&resp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// splitMessages cuts b into messages, each after a length byte (the last
// one takes what is left).
func splitMessages(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := int(b[0])
		b = b[1:]
		if n > len(b) {
			n = len(b)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// confineJoin points every address of a Join that decodes at sink, a
// loopback port of this test's: a fuzzed address must never make the node
// dial (or look up) anything outside this machine, nor another test's
// server on it. Node ids and everything else stay as fuzzed.
func confineJoin(body []byte, sink string) []byte {
	var req syncv1.JoinRequest
	if proto.Unmarshal(body, &req) != nil {
		return body
	}
	for _, a := range []*string{&req.RaftAddr, &req.GrpcAddr, &req.GossipAddr} {
		if *a != "" {
			*a = sink
		}
	}
	out, err := proto.Marshal(&req)
	if err != nil {
		return body
	}
	return out
}

// startSink listens on loopback and closes every connection it accepts:
// an address where no node answers.
func startSink(tb testing.TB) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tb.Cleanup(func() {
		lis.Close()
		<-done
	})
	return lis.Addr().String()
}

func mustStates(t *testing.T, n *node.Node) map[shard.GroupID]node.GroupState {
	t.Helper()
	st, err := n.States()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// settledStates waits until no group has deliveries pending (a Send's
// fan-out would change the state while a rejected request is checked) and,
// if twice, until two reads in a row agree; it returns the states.
func settledStates(t *testing.T, n *node.Node, twice bool) map[shard.GroupID]node.GroupState {
	t.Helper()
	var out map[shard.GroupID]node.GroupState
	testutil.Eventually(t, 30*time.Second, func() error {
		st, err := n.States()
		if err != nil {
			return err
		}
		for id, g := range st {
			if g.DeliveriesPending {
				return fmt.Errorf("group %d has deliveries pending", id)
			}
		}
		// A group an earlier input made goes on applying a new leader's
		// commands (its ranges, the cluster version) on its own.
		if err := testcluster.GroupsSettled(n); err != nil {
			return err
		}
		if twice && (out == nil || !maps.Equal(out, st)) {
			out = st
			return errors.New("the state is still changing")
		}
		out = st
		return nil
	})
	return out
}

// diffStates names the groups whose state differs, or returns "".
func diffStates(before, after map[shard.GroupID]node.GroupState) string {
	var diffs []string
	for id, b := range before {
		if a := after[id]; a.Digest != b.Digest || a.Applied != b.Applied {
			diffs = append(diffs, fmt.Sprintf("group %d applied %d -> %d", id, b.Applied, a.Applied))
		}
	}
	for id := range after {
		if _, ok := before[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("group %d appeared", id))
		}
	}
	return strings.Join(diffs, ", ")
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
