package testutil

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Method is one RPC method of a gRPC service.
type Method struct {
	// FullName is what goes on the wire: "/syncstore.v1.Sync/Append".
	FullName string
	// Stream describes a streaming method; nil for a unary one.
	Stream *grpc.StreamDesc
	// Request is the type of its request messages.
	Request protoreflect.MessageType
}

// Methods lists every method of the services, from their generated
// descriptors, so a test that walks them covers a new RPC without being
// told. The services' .pb.go must be linked in (imported).
func Methods(services ...grpc.ServiceDesc) []Method {
	var out []Method
	for _, sd := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(sd.ServiceName))
		if err != nil {
			panic(fmt.Sprintf("testutil: service %s: %v", sd.ServiceName, err))
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		add := func(name string, stream *grpc.StreamDesc) {
			md := methods.ByName(protoreflect.Name(name))
			if md == nil {
				panic(fmt.Sprintf("testutil: %s has no method %s in its descriptor", sd.ServiceName, name))
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				panic(fmt.Sprintf("testutil: %s.%s request: %v", sd.ServiceName, name, err))
			}
			out = append(out, Method{FullName: "/" + sd.ServiceName + "/" + name, Stream: stream, Request: mt})
		}
		for _, m := range sd.Methods {
			add(m.MethodName, nil)
		}
		for i := range sd.Streams {
			add(sd.Streams[i].StreamName, &sd.Streams[i])
		}
	}
	return out
}
