package inproc

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func dialRaw(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestBadInputIsRejectedAndChangesNothing sends every kind of bad request
// straight over gRPC (no client-side checks) and expects INVALID_ARGUMENT
// with a message naming the problem, and an unchanged state.
func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	const maxPayload = 64 << 10
	c := testcluster.New(t, 1, func(cfg *node.Config) { cfg.MaxPayloadBytes = maxPayload })
	m := c.Members[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client().Append(ctx, "ok", []byte("x"), client.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	conn := dialRaw(t, m.GRPCAddr)
	sync, records := syncv1.NewSyncClient(conn), syncv1.NewRecordsClient(conn)
	tl := proto.String
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"append to an empty timeline", func() error {
			_, err := sync.Append(ctx, &syncv1.AppendRequest{Timeline: tl(""), Payload: []byte("x")})
			return err
		}, "timeline id is empty"},
		{"append to a 257-byte timeline", func() error {
			_, err := sync.Append(ctx, &syncv1.AppendRequest{Timeline: tl(strings.Repeat("t", 257)), Payload: []byte("x")})
			return err
		}, "timeline id is 257 bytes; the limit is 256"},
		{"append to a timeline that is not UTF-8", func() error {
			_, err := sync.Append(ctx, &syncv1.AppendRequest{Timeline: tl("bad\xff\xfe"), Payload: []byte("x")})
			return err
		}, "not valid UTF-8"},
		{"append a payload over the limit", func() error {
			_, err := sync.Append(ctx, &syncv1.AppendRequest{Timeline: tl("ok"), Payload: make([]byte, maxPayload+1)})
			return err
		}, "payload is 65537 bytes; the limit is 65536"},
		{"pull with limit over the page size", func() error {
			_, err := sync.Pull(ctx, &syncv1.PullRequest{Timeline: tl("ok"), Limit: proto.Uint32(1001)})
			return err
		}, "limit 1001 must be within 1..1000"},
		{"pull an empty timeline id", func() error {
			_, err := sync.Pull(ctx, &syncv1.PullRequest{Timeline: tl(""), Limit: proto.Uint32(10)})
			return err
		}, "timeline id is empty"},
		{"head of a timeline that is not UTF-8", func() error {
			_, err := sync.Head(ctx, &syncv1.HeadRequest{Timeline: tl("\xc3\x28")})
			return err
		}, "not valid UTF-8"},
		{"metadata that is not UTF-8", func() error {
			_, err := sync.Append(ctx, &syncv1.AppendRequest{Timeline: tl("ok"), Metadata: map[string]string{"k": "\xff"}})
			return err
		}, "not valid UTF-8"},
		{"send to the conversation itself", func() error {
			_, err := sync.Send(ctx, &syncv1.SendRequest{Conversation: tl("room"), Sender: tl("bob"), Recipients: []string{"alice", "room"}})
			return err
		}, "recipient 1 is the conversation itself"},
		{"send from the conversation itself", func() error {
			_, err := sync.Send(ctx, &syncv1.SendRequest{Conversation: tl("room"), Sender: tl("room"), Recipients: []string{"alice"}})
			return err
		}, "the sender \"room\" is the conversation itself"},
		{"write to an empty collection", func() error {
			_, err := records.Write(ctx, &syncv1.WriteRequest{Collection: tl(""), Ops: []*syncv1.RecordOp{client.Put("a", nil)}})
			return err
		}, "collection id is empty"},
		{"write with no operations", func() error {
			_, err := records.Write(ctx, &syncv1.WriteRequest{Collection: tl("c")})
			return err
		}, "a write has 0 operations; 1..256 allowed"},
		{"write of a key not in UTF-8", func() error {
			_, err := records.Write(ctx, &syncv1.WriteRequest{Collection: tl("c"), Ops: []*syncv1.RecordOp{client.Put("\xff", nil)}})
			return err
		}, "record key is not valid UTF-8"},
		{"write of one key twice", func() error {
			_, err := records.Write(ctx, &syncv1.WriteRequest{Collection: tl("c"), Ops: []*syncv1.RecordOp{client.Put("a", nil), client.Delete("a")}})
			return err
		}, "key \"a\" appears twice in one write"},
		{"write of an oversized value", func() error {
			_, err := records.Write(ctx, &syncv1.WriteRequest{Collection: tl("c"), Ops: []*syncv1.RecordOp{client.Put("a", make([]byte, 64<<10+1))}})
			return err
		}, "the value of \"a\" is 65537 bytes; the limit is 65536"},
		{"sync with limit over the page size", func() error {
			_, err := records.Sync(ctx, &syncv1.RecordSyncRequest{Collection: tl("c"), Limit: proto.Uint32(1001)})
			return err
		}, "limit 1001 must be within 1..1000"},
		{"get of a collection not in UTF-8", func() error {
			_, err := records.Get(ctx, &syncv1.GetRequest{Collection: tl("\xfe"), Limit: proto.Uint32(1)})
			return err
		}, "collection id is not valid UTF-8"},
		{"sync many of too many", func() error {
			_, err := records.SyncMany(ctx, &syncv1.SyncManyRequest{Collections: make([]*syncv1.RecordSyncRequest, node.MaxSyncManyCollections+1)})
			return err
		}, "1001 collections; at most 1000 per SyncMany"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := m.Node.States()
			err := tc.call()
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("got %v %q, want InvalidArgument containing %q", st.Code(), st.Message(), tc.want)
			}
			after, _ := m.Node.States()
			if !maps.Equal(before, after) {
				t.Fatal("a rejected request changed the state")
			}
		})
	}
}

func TestHealthServiceReportsServing(t *testing.T) {
	c := testcluster.New(t, 1, nil)
	waitHealth(t, c, 0, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
}

// TestReflectionListsTheServices: what grpcurl relies on.
func TestReflectionListsTheServices(t *testing.T) {
	c := testcluster.New(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(dialRaw(t, c.Members[0].GRPCAddr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	got := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		got[s.GetName()] = true
	}
	for _, want := range []string{"syncstore.v1.Sync", "syncstore.v1.Admin", "grpc.health.v1.Health"} {
		if !got[want] {
			t.Errorf("reflection does not list %s (got %v)", want, got)
		}
	}
}
