package testutil

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// RawCodec is a client codec that sends a *[]byte or []byte as the message
// body as is and receives the body into a *[]byte, so a test can put any
// bytes on the wire, valid protobuf or not (the generated clients can only
// send what marshals).
type RawCodec struct{}

// Raw is the call option that makes a call use RawCodec.
var Raw = grpc.ForceCodecV2(RawCodec{})

// Name is "proto": the server reads the body as a protobuf message.
func (RawCodec) Name() string { return "proto" }

func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch b := v.(type) {
	case []byte:
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	case *[]byte:
		return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
	}
	return nil, fmt.Errorf("raw codec: cannot send %T", v)
}

func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot receive into %T", v)
	}
	*b = data.Materialize()
	return nil
}
