package inproc

import (
	"context"
	"maps"
	"math/rand"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// malformedBodies are not protobuf wire format, whatever the message type.
var malformedBodies = [][]byte{
	{0x00, 0x01}, // field number 0
	{0x08, 0x80}, // varint cut short
	{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // varint over 64 bits
	{0x0a, 0x7f, 'x'},                    // length past the end
	{0x0b, 0x08, 0x01},                   // group never ended
	{0x0c},                               // group ended, never started
	{0x0e, 0x01},                         // wire type 6
	{0x0f, 0x01},                         // wire type 7
	{0x80, 0x80, 0x80, 0x80, 0x10, 0x01}, // field number over 2^29-1
}

// undecodableBodies returns the malformed bodies and n random ones that do
// not decode as mt (random bytes may happen to be valid protobuf: those are
// not what this test is about).
func undecodableBodies(rng *rand.Rand, mt protoreflect.MessageType, n int) [][]byte {
	out := append([][]byte(nil), malformedBodies...)
	for tries := 0; n > 0 && tries < 10000; tries++ {
		b := make([]byte, 1+rng.Intn(64))
		rng.Read(b)
		if proto.Unmarshal(b, mt.New().Interface()) != nil {
			out = append(out, b)
			n--
		}
	}
	return out
}

// callRaw sends body as the request of m and returns how the call ended.
// On a stream that takes several messages a valid empty message goes
// first, so a bad body is also tried on an open stream.
func callRaw(ctx context.Context, conn *grpc.ClientConn, m testutil.Method, body []byte) error {
	if m.Stream == nil {
		var resp []byte
		return conn.Invoke(ctx, m.FullName, body, &resp, testutil.Raw)
	}
	cs, err := conn.NewStream(ctx, m.Stream, m.FullName, testutil.Raw)
	if err != nil {
		return err
	}
	if m.Stream.ClientStreams {
		if err := cs.SendMsg([]byte{}); err != nil {
			return recvUntilError(cs)
		}
	}
	if err := cs.SendMsg(body); err != nil {
		return recvUntilError(cs)
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	return recvUntilError(cs)
}

// recvUntilError reads what the server streams (a heartbeat, say) until the
// status; ctx bounds it.
func recvUntilError(cs grpc.ClientStream) error {
	for {
		var resp []byte
		if err := cs.RecvMsg(&resp); err != nil {
			return err
		}
	}
}

func allStates(t *testing.T, c *testcluster.Cluster) map[string]map[shard.GroupID]node.GroupState {
	t.Helper()
	out := map[string]map[shard.GroupID]node.GroupState{}
	for _, m := range c.Members {
		st, err := m.Node.States()
		if err != nil {
			t.Fatalf("%s: %v", m.ID, err)
		}
		out[m.ID] = st
	}
	return out
}

// TestRandomBodiesAreInvalidArgumentAndChangeNothing sends bodies that are
// not protobuf to every RPC of Sync, Admin and Peer (listed from the
// generated descriptors, so a new RPC is covered) on every node. Each must
// be answered INVALID_ARGUMENT naming the request type, and no replica may
// change: a request that does not decode must never reach the state.
func TestRandomBodiesAreInvalidArgumentAndChangeNothing(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client()
	if _, err := cl.Append(ctx, "before", []byte("x"), client.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(10 * time.Second)
	before := allStates(t, c)

	var conns []*grpc.ClientConn
	for _, m := range c.Members {
		conns = append(conns, dialRaw(t, m.GRPCAddr))
	}
	methods := testutil.Methods(syncv1.Sync_ServiceDesc, syncv1.Admin_ServiceDesc, syncv1.Peer_ServiceDesc, syncv1.Records_ServiceDesc)
	if len(methods) < 12 {
		t.Fatalf("found %d methods; the descriptors list at least 12", len(methods))
	}
	rng := rand.New(rand.NewSource(9))
	calls := 0
	for _, m := range methods {
		want := "request body is not a valid " + string(m.Request.Descriptor().FullName()) + ": "
		for i, body := range undecodableBodies(rng, m.Request, 6) {
			mi := i % len(conns)
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			err := callRaw(cctx, conns[mi], m, body)
			ccancel()
			calls++
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), want) {
				t.Errorf("%s on %s, body %x: got %v %q, want InvalidArgument starting %q", m.FullName, c.Members[mi].ID, body, st.Code(), st.Message(), want)
			}
		}
	}
	t.Logf("%d methods, %d calls", len(methods), calls)

	after := allStates(t, c)
	for id, st := range before {
		if !maps.Equal(st, after[id]) {
			t.Errorf("%s: a request that did not decode changed the state: before %v, after %v", id, st, after[id])
		}
	}

	requireServing(t, c)
}
