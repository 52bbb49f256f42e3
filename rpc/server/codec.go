package server

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A request body that does not decode is the client's fault, so it is
// answered INVALID_ARGUMENT. grpc-go answers INTERNAL instead: its recv
// wraps any codec Unmarshal error in codes.Internal ("grpc: failed to
// unmarshal the received message"), and serverStream.RecvMsg writes that
// status to the client at once, before the handler or an interceptor can
// change it (grpc-go v1.85.0, rpc_util.go recv and stream.go RecvMsg; unary
// methods decode through the same RecvMsg). So the codec must not fail:
//
//   - decodeCodec decodes as the proto codec does; when that fails it resets
//     the message and marks it undecodable, keeping the reason, and succeeds;
//   - rejectUndecodableUnary and rejectUndecodableStream, which see every
//     decoded request (unary) and every RecvMsg (streams), turn a marked
//     message into INVALID_ARGUMENT before any handler reads it.
//
// The mark lives in the message itself, in its unknown fields, so nothing
// outlives the request. A side table of failed decodes would leak: a unary
// RecvMsg that decoded a body then fails (a second message, a reset
// stream) never reaches the interceptor that would remove the entry. The
// mark starts with a 0x00 byte, the tag of field number 0, which is not
// valid wire format, so no message that decoded can carry it (protobuf-go
// rejects field number 0) and valid requests are untouched. The codec is
// forced for every content-subtype; only the proto codec is registered, and
// grpc-go fell back to it for any other subtype anyway.

// undecodableMark starts the unknown fields of a request that did not decode.
const undecodableMark = 0x00

// decodeCodec is the proto codec, except that a body that does not decode
// gives a marked message rather than an error.
type decodeCodec struct{ base encoding.CodecV2 }

func newDecodeCodec() decodeCodec {
	return decodeCodec{base: encoding.GetCodecV2(protocodec.Name)}
}

func (c decodeCodec) Name() string { return c.base.Name() }

func (c decodeCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c decodeCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err // not a proto message: a bug on this side, INTERNAL is right
	}
	proto.Reset(m) // no half-decoded fields reach anyone
	// protobuf-go puts a no-break space in its messages now and then, to
	// stop code from matching them; a person reads this one.
	reason := fmt.Sprintf("request body is not a valid %s: %s", m.ProtoReflect().Descriptor().FullName(), strings.ReplaceAll(err.Error(), "\u00a0", " "))
	m.ProtoReflect().SetUnknown(append([]byte{undecodableMark}, reason...))
	return nil
}

// undecodable returns the INVALID_ARGUMENT error of a message decodeCodec
// marked, or nil.
func undecodable(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	u := m.ProtoReflect().GetUnknown()
	if len(u) == 0 || u[0] != undecodableMark {
		return nil
	}
	return status.Error(codes.InvalidArgument, string(u[1:]))
}

func rejectUndecodableUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := undecodable(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func rejectUndecodableStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, checkedStream{ss})
}

// checkedStream fails a RecvMsg whose message did not decode.
type checkedStream struct{ grpc.ServerStream }

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return undecodable(m)
}
