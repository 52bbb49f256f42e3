package server

import (
	"context"
	"io"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func decode(t *testing.T, body []byte, m proto.Message) {
	t.Helper()
	if err := newDecodeCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(body)}, m); err != nil {
		t.Fatalf("decodeCodec.Unmarshal returned %v; it must never fail for a proto message", err)
	}
}

func TestDecodeCodecLeavesValidMessagesAlone(t *testing.T) {
	want := &syncv1.AppendRequest{Timeline: proto.String("tl"), Payload: []byte("p"), Metadata: map[string]string{"k": "v"}}
	body, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	// An unknown field (a newer client's) is valid and must not look like
	// the mark.
	body = protowire.AppendTag(body, 99, protowire.VarintType)
	body = protowire.AppendVarint(body, 7)
	got := &syncv1.AppendRequest{}
	decode(t, body, got)
	if err := undecodable(got); err != nil {
		t.Fatalf("a valid body was marked undecodable: %v", err)
	}
	got.ProtoReflect().SetUnknown(nil)
	if !proto.Equal(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
}

func TestDecodeCodecMarksWhatDoesNotDecode(t *testing.T) {
	valid, _ := proto.Marshal(&syncv1.AppendRequest{Timeline: proto.String("tl")})
	cases := []struct {
		name string
		body []byte
		msg  proto.Message
	}{
		{"truncated length", []byte{0x0a, 0x7f, 'x'}, &syncv1.AppendRequest{}},
		// A valid field first: the half-decoded timeline must not survive.
		{"valid field then garbage", append(valid, 0x0f), &syncv1.AppendRequest{}},
		{"field number 0", []byte{0x00, 0x01}, &syncv1.DigestsRequest{}},
		{"truncated varint", []byte{0x08, 0xff}, &syncv1.PullRequest{}},
		{"proto3 string not UTF-8", []byte{0x0a, 0x01, 0xff}, &syncv1.JoinRequest{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			decode(t, tc.body, tc.msg)
			st := status.Convert(undecodable(tc.msg))
			want := "request body is not a valid " + string(tc.msg.ProtoReflect().Descriptor().FullName()) + ": "
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), want) {
				t.Fatalf("got %v %q, want InvalidArgument starting %q", st.Code(), st.Message(), want)
			}
			fields := 0
			tc.msg.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { fields++; return true })
			if fields != 0 {
				t.Fatalf("a body that did not decode left %d fields set: %v", fields, tc.msg)
			}
		})
	}
}

// TestDecodeCodecMarksExactlyTheFailures: over random bodies, a message is
// marked if and only if the proto codec fails on the same bytes, so the mark
// never changes the fate of a valid request.
func TestDecodeCodecMarksExactlyTheFailures(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := range 20000 {
		body := make([]byte, rng.Intn(12))
		rng.Read(body)
		m := &syncv1.SendRequest{}
		decode(t, body, m)
		failed := proto.Unmarshal(body, &syncv1.SendRequest{}) != nil
		if marked := undecodable(m) != nil; marked != failed {
			t.Fatalf("body %d %x: marked %v, but the proto codec failed: %v", i, body, marked, failed)
		}
	}
}

func TestDecodeCodecStillRejectsWhatIsNoProtoMessage(t *testing.T) {
	var notProto struct{}
	if err := newDecodeCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x08, 0x01})}, &notProto); err == nil {
		t.Fatal("decoding into a non-proto value succeeded")
	}
}

// serveHealthAndReflection serves the health service (unary Check,
// server-streaming Watch) and reflection (a bidi stream) with opts, and
// returns a connection to it.
func serveHealthAndReflection(t *testing.T, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	return conn
}

var (
	unaryDesc = &grpc.StreamDesc{}
	watchDesc = &grpc.StreamDesc{ServerStreams: true}
	bidiDesc  = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
)

const (
	checkMethod      = "/grpc.health.v1.Health/Check"
	watchMethod      = "/grpc.health.v1.Health/Watch"
	reflectionMethod = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
)

// callRaw sends bodies on one call of method and returns the status of the
// first reply that is no message (nil: every body got a reply).
func callRaw(ctx context.Context, conn *grpc.ClientConn, desc *grpc.StreamDesc, method string, bodies ...[]byte) error {
	if desc == unaryDesc {
		var resp []byte
		return conn.Invoke(ctx, method, bodies[0], &resp, testutil.Raw)
	}
	cs, err := conn.NewStream(ctx, desc, method, testutil.Raw)
	if err != nil {
		return err
	}
	for _, b := range bodies {
		if err := cs.SendMsg(b); err != nil {
			break // the status comes with RecvMsg
		}
		if !desc.ClientStreams {
			break
		}
		var resp []byte
		if err := cs.RecvMsg(&resp); err != nil {
			return err
		}
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	var resp []byte
	return cs.RecvMsg(&resp)
}

// TestUndecodableBodiesAreInvalidArgument over a real gRPC server, unary,
// server-streaming and bidi: without the options grpc-go answers INTERNAL
// (what this file exists to change); with them, INVALID_ARGUMENT naming the
// message type; valid bodies are served as before.
func TestUndecodableBodiesAreInvalidArgument(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plain := serveHealthAndReflection(t)
	fixed := serveHealthAndReflection(t,
		grpc.ForceServerCodecV2(newDecodeCodec()),
		grpc.ChainUnaryInterceptor(rejectUndecodableUnary),
		grpc.ChainStreamInterceptor(rejectUndecodableStream))

	badUTF8 := []byte{0x0a, 0x01, 0xff} // proto3 string field 1, not UTF-8
	truncated := []byte{0x0a, 0x7f}
	listServices, _ := proto.Marshal(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	cases := []struct {
		name   string
		desc   *grpc.StreamDesc
		method string
		bodies [][]byte
		want   string
	}{
		{"unary", unaryDesc, checkMethod, [][]byte{badUTF8}, "grpc.health.v1.HealthCheckRequest"},
		{"server stream", watchDesc, watchMethod, [][]byte{truncated}, "grpc.health.v1.HealthCheckRequest"},
		{"bidi stream, first message", bidiDesc, reflectionMethod, [][]byte{truncated}, "grpc.reflection.v1.ServerReflectionRequest"},
		{"bidi stream, after a valid message", bidiDesc, reflectionMethod, [][]byte{listServices, {0x0f}}, "grpc.reflection.v1.ServerReflectionRequest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code := status.Code(callRaw(ctx, plain, tc.desc, tc.method, tc.bodies...)); code != codes.Internal {
				t.Errorf("plain grpc-go answered %v; if it is no longer INTERNAL, codec.go may not be needed", code)
			}
			st := status.Convert(callRaw(ctx, fixed, tc.desc, tc.method, tc.bodies...))
			want := "request body is not a valid " + tc.want + ": "
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), want) {
				t.Fatalf("got %v %q, want InvalidArgument starting %q", st.Code(), st.Message(), want)
			}
		})
	}

	t.Run("valid requests", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(fixed).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check: %v %v", resp.GetStatus(), err)
		}
		stream, err := reflectionpb.NewServerReflectionClient(fixed).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the stream goes on after a valid message
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
				t.Fatal(err)
			}
			if r, err := stream.Recv(); err != nil || len(r.GetListServicesResponse().GetService()) == 0 {
				t.Fatalf("reflection: %v %v", r, err)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("reflection stream ended with %v, want EOF", err)
		}
	})
}
