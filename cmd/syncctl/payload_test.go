package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
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

// Pull returns every payload kept, as entries 1, 2, ...
func (p *payloadSink) Pull(context.Context, *syncv1.PullRequest) (*syncv1.PullResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &syncv1.PullResponse{HeadSeq: uint64(len(p.got))}
	for i, b := range p.got {
		resp.Entries = append(resp.Entries, &syncv1.Entry{Seq: uint64(i + 1), Payload: b})
	}
	return resp, nil
}

// Get returns every value kept, as records k1, k2, ...
func (p *payloadSink) Get(context.Context, *syncv1.GetRequest) (*syncv1.GetResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &syncv1.GetResponse{Version: uint64(len(p.got))}
	for i, b := range p.got {
		resp.Records = append(resp.Records, &syncv1.Record{Key: fmt.Sprintf("k%d", i+1), Version: uint64(i + 1), Value: b})
	}
	return resp, nil
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

// TestJSONPayloads: --json prints a payload or record value that is UTF-8
// as text ("payload", "value") and any other as base64 ("payload_base64",
// "value_base64"), which --base64 forces; people read "base64:...".
func TestJSONPayloads(t *testing.T) {
	sink, addr := servePayloadSink(t)
	binary := []byte{0xff, 0x00, 0xfe, 'x'}
	sink.keep([]byte("héllo"))
	sink.keep(binary)
	sink.keep(nil)
	type entry struct {
		Payload       *string `json:"payload"`
		PayloadBase64 *string `json:"payload_base64"`
	}
	type record struct {
		Value       *string `json:"value"`
		ValueBase64 *string `json:"value_base64"`
	}
	b64 := func(b []byte) *string { s := base64.StdEncoding.EncodeToString(b); return &s }
	text := func(s string) *string { return &s }
	for _, force := range []bool{false, true} {
		flags := []string{"--addr", addr, "--json"}
		want := []entry{{Payload: text("héllo")}, {PayloadBase64: b64(binary)}, {Payload: text("")}}
		if force {
			flags = append(flags, "--base64")
			want = []entry{{PayloadBase64: b64([]byte("héllo"))}, {PayloadBase64: b64(binary)}, {PayloadBase64: b64(nil)}}
		}
		out, _, err := runIO(t, context.Background(), nil, append(flags, "pull", "t")...)
		var page struct{ Entries []entry }
		if err != nil || json.Unmarshal([]byte(out), &page) != nil || !reflect.DeepEqual(page.Entries, want) {
			t.Errorf("--base64 %t: pull --json: %v\n%s", force, err, out)
		}
		out, _, err = runIO(t, context.Background(), nil, append(flags, "collection", "get", "c")...)
		var coll struct{ Records []record }
		if err != nil || json.Unmarshal([]byte(out), &coll) != nil || len(coll.Records) != 3 {
			t.Fatalf("--base64 %t: collection get --json: %v\n%s", force, err, out)
		}
		for i, r := range coll.Records {
			if !reflect.DeepEqual(entry{r.Value, r.ValueBase64}, want[i]) {
				t.Errorf("--base64 %t: record %d is %+v, want %+v", force, i, r, want[i])
			}
		}
	}
	out, _, err := runIO(t, context.Background(), nil, "--addr", addr, "pull", "t")
	if err != nil || !strings.Contains(out, "base64:"+*b64(binary)) || !strings.Contains(out, "héllo") {
		t.Errorf("pull: %v\n%s", err, out)
	}
	out, _, err = runIO(t, context.Background(), nil, "--addr", addr, "collection", "get", "c")
	if err != nil || !strings.Contains(out, "k2 @2 = base64:"+*b64(binary)) || !strings.Contains(out, `k1 @1 = "héllo"`) {
		t.Errorf("collection get: %v\n%s", err, out)
	}
}
