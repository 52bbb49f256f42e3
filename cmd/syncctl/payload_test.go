package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// payloadSink records the payloads and record values it is sent.
type payloadSink struct {
	syncv1.UnimplementedSyncServer
	syncv1.UnimplementedRecordsServer
	mu  sync.Mutex
	got [][]byte
}

func (p *payloadSink) keep(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, b)
}

func (p *payloadSink) last() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) == 0 {
		return nil
	}
	return p.got[len(p.got)-1]
}

func (p *payloadSink) Append(_ context.Context, req *syncv1.AppendRequest) (*syncv1.AppendResponse, error) {
	p.keep(req.GetPayload())
	return &syncv1.AppendResponse{Seq: 1}, nil
}

func (p *payloadSink) Send(_ context.Context, req *syncv1.SendRequest) (*syncv1.SendResponse, error) {
	p.keep(req.GetPayload())
	return &syncv1.SendResponse{Seq: 1}, nil
}

func (p *payloadSink) Write(_ context.Context, req *syncv1.WriteRequest) (*syncv1.WriteResponse, error) {
	p.keep(req.GetOps()[0].GetValue())
	return &syncv1.WriteResponse{Version: 1}, nil
}

func servePayloadSink(t *testing.T) (*payloadSink, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := &payloadSink{}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20))
	syncv1.RegisterSyncServer(s, sink)
	syncv1.RegisterRecordsServer(s, sink)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return sink, lis.Addr().String()
}

// TestPayloadFromStdinOrFile: append, send and collection put take their
// payload from stdin ("-") or --file, byte for byte: 2 MB of binary, which
// argv cannot carry.
func TestPayloadFromStdinOrFile(t *testing.T) {
	sink, addr := servePayloadSink(t)
	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, big, 0o600); err != nil {
		t.Fatal(err)
	}
	// Each command's arguments around its payload's.
	commands := map[string]func(payload ...string) []string{
		"append": func(p ...string) []string { return append([]string{"append", "t"}, p...) },
		"send": func(p ...string) []string {
			return append(append([]string{"send", "room"}, p...), "--from", "bob", "--to", "alice")
		},
		"collection put": func(p ...string) []string { return append([]string{"collection", "put", "c", "k"}, p...) },
	}
	for name, argsOf := range commands {
		for _, how := range []struct {
			name    string
			payload []string
			stdin   []byte
			want    []byte
		}{
			{"stdin", []string{"-"}, big, big},
			{"--file", []string{"--file", file}, nil, big},
			{"--file -", []string{"--file", "-"}, big, big},
			{"argument", []string{"text"}, nil, []byte("text")},
		} {
			args := append([]string{"--addr", addr}, argsOf(how.payload...)...)
			_, _, err := runIO(t, context.Background(), bytes.NewReader(how.stdin), args...)
			if err != nil || !bytes.Equal(sink.last(), how.want) {
				t.Errorf("%s by %s: %v; the node got %d bytes, want %d", name, how.name, err, len(sink.last()), len(how.want))
			}
		}
	}
}

func TestPayloadInputUsage(t *testing.T) {
	_, addr := servePayloadSink(t)
	file := filepath.Join(t.TempDir(), "p")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		want  string
		usage bool
	}{
		{[]string{"append", "t", "text", "--file", file}, "not both", true},
		{[]string{"append", "t"}, "give the payload", true},
		{[]string{"send", "room", "--from", "bob", "--to", "alice"}, "give the message", true},
		{[]string{"collection", "put", "c", "k"}, "give the value", true},
		{[]string{"append", "t", "--file", filepath.Join(file, "nope")}, "payload: open", false},
		{[]string{"append", "t", "a", "b"}, "accepts between 1 and 2 arg(s)", true},
	} {
		_, _, err := runIO(t, context.Background(), nil, append([]string{"--addr", addr}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, new(usageError)) != tc.usage {
			t.Errorf("%v: got %v; want %q, usage error %t", tc.args, err, tc.want, tc.usage)
		}
	}
	_, _, err := runIO(t, context.Background(), bytes.NewReader(make([]byte, maxPayloadRead+1)), "--addr", addr, "append", "t", "-")
	if err == nil || !strings.Contains(err.Error(), "more than any node takes") {
		t.Errorf("a payload over %d bytes: %v", maxPayloadRead, err)
	}
	if maxPayloadRead != fsm.MaxPayloadBytes {
		t.Errorf("maxPayloadRead is %d, fsm.MaxPayloadBytes %d", maxPayloadRead, fsm.MaxPayloadBytes)
	}
}
