package node

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func newTestMux(t *testing.T) *Mux {
	t.Helper()
	m, err := ListenMux("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMuxRoutesConnectionsByGroup(t *testing.T) {
	a, b := newTestMux(t), newTestMux(t)
	addr := b.Addr().String()
	layers := map[uint64]interface {
		Accept() (net.Conn, error)
		Close() error
	}{}
	for _, g := range []uint64{1, 2} {
		l, err := b.Layer(g)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		layers[g] = l
	}
	if _, err := b.Layer(1); err == nil {
		t.Fatal("a second layer for group 1 was allowed")
	}
	for _, g := range []uint64{2, 1} {
		out, err := a.Layer(g)
		if err != nil {
			t.Fatal(err)
		}
		c, err := out.Dial(raftAddr(addr), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte{byte(g), 42}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		in, err := layers[g].Accept()
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 2)
		if _, err := io.ReadFull(in, got); err != nil || got[0] != byte(g) {
			t.Fatalf("group %d received %v, %v", g, got, err)
		}
		out.Close()
		// Closing a layer closes its connections.
		if _, err := c.Write(msg); err == nil {
			if _, err := c.Read(got); err == nil {
				t.Fatalf("group %d: connection still open after the layer closed", g)
			}
		}
	}
}

func raftAddr(s string) raft.ServerAddress { return raft.ServerAddress(s) }

func TestMuxClosesConnectionsForUnknownGroupsAndBadHeaders(t *testing.T) {
	b := newTestMux(t)
	for _, header := range [][]byte{
		append([]byte(muxMagic), 0, 0, 0, 0, 0, 0, 0, 9), // no group 9 here
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		c, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(header)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("header %q: connection left open", header)
		}
		c.Close()
	}
}
