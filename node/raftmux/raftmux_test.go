package raftmux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/internal/testutil"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestMux(t *testing.T) *Mux { return newTestMuxAs(t, "") }

func newTestMuxAs(t *testing.T, id string) *Mux {
	t.Helper()
	m, err := Listen("127.0.0.1:0", id, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// waitHandshakesDone waits until every handshake goroutine of m has ended.
func waitHandshakesDone(t *testing.T, m *Mux) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := m.handshakes.Load(); n > 0 {
			return fmt.Errorf("%d handshake goroutines still running", n)
		}
		return nil
	})
}

func TestMuxRoutesConnectionsByGroup(t *testing.T) {
	a, b := newTestMux(t), newTestMuxAs(t, "node-b")
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
	if _, err := b.Layer(ProbeGroup); err == nil {
		t.Fatal("a layer for the reserved probe group was allowed")
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
		// Probes in between do not disturb group traffic.
		if id, err := ProbeIdentity(context.Background(), addr, nil); err != nil || id != "node-b" {
			t.Fatalf("probe between group connections: %q, %v", id, err)
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
		// And the other way.
		if _, err := in.Write([]byte{7}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got[:1]); err != nil || got[0] != 7 {
			t.Fatalf("group %d: reply %v, %v", g, got[:1], err)
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
		[]byte("SSR1"), // cut short, then closed by the dialer below
	} {
		c, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(header)
		if len(header) < muxHeaderLen {
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("header %q: connection left open", header)
		}
		c.Close()
	}
	waitHandshakesDone(t, b)
}

// fakeServer accepts on 127.0.0.1 and runs handle for each connection;
// cleanup closes everything and waits for the handlers.
func fakeServer(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	conns := newConnSet()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !conns.add(c) {
				c.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.closeAll()
		wg.Wait()
	})
	return ln.Addr().String()
}

// closedPort is an address where nothing listens (any more).
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestMuxProbeRaftIdentity(t *testing.T) {
	readHeaderThen := func(reply []byte) func(net.Conn) {
		return func(c net.Conn) {
			if _, err := io.ReadFull(c, make([]byte, muxHeaderLen)); err != nil {
				return
			}
			c.Write(reply)
		}
	}
	cases := []struct {
		name    string
		addr    func(t *testing.T) string
		timeout time.Duration // of the caller's context; 0: none
		cancel  bool          // cancel the context while the probe waits
		wantID  string
		wantErr []error
		within  time.Duration // the probe must end this fast
	}{
		{name: "answers the id", addr: func(t *testing.T) string { return newTestMuxAs(t, "n7").Addr().String() }, wantID: "n7", within: 2 * time.Second},
		{name: "mux without an id answers an empty one", addr: func(t *testing.T) string { return newTestMux(t).Addr().String() }, wantID: "", within: 2 * time.Second},
		{name: "long id", addr: func(t *testing.T) string {
			return newTestMuxAs(t, strings.Repeat("x", MaxNodeIDBytes)).Addr().String()
		}, wantID: strings.Repeat("x", MaxNodeIDBytes), within: 2 * time.Second},
		{name: "closed port fails fast", addr: closedPort, timeout: time.Minute, wantErr: []error{ErrUnreachable}, within: 2 * time.Second},
		{
			name: "accepts but never answers fails by the deadline",
			addr: func(t *testing.T) string {
				return fakeServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
			},
			timeout: 200 * time.Millisecond, wantErr: []error{ErrProbeTimeout, context.DeadlineExceeded}, within: 2 * time.Second,
		},
		{
			name: "cancelled while waiting",
			addr: func(t *testing.T) string {
				return fakeServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
			},
			cancel: true, wantErr: []error{context.Canceled}, within: 2 * time.Second,
		},
		{
			name:    "closes without answering (an older syncd)",
			addr:    func(t *testing.T) string { return fakeServer(t, readHeaderThen(nil)) },
			wantErr: []error{ErrNotRaftPort}, within: 2 * time.Second,
		},
		{
			name: "another protocol",
			addr: func(t *testing.T) string {
				return fakeServer(t, readHeaderThen([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")))
			},
			wantErr: []error{ErrNotRaftPort}, within: 2 * time.Second,
		},
		{
			name: "id longer than the bound",
			addr: func(t *testing.T) string {
				reply := binary.BigEndian.AppendUint16([]byte(muxMagic), 0xffff)
				return fakeServer(t, readHeaderThen(append(reply, make([]byte, 1<<20)...)))
			},
			wantErr: []error{ErrNotRaftPort}, within: 2 * time.Second,
		},
		{
			name: "id cut short",
			addr: func(t *testing.T) string {
				return fakeServer(t, readHeaderThen(append(binary.BigEndian.AppendUint16([]byte(muxMagic), 5), "ab"...)))
			},
			wantErr: []error{ErrNotRaftPort}, within: 2 * time.Second,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			if tc.cancel {
				stop := time.AfterFunc(100*time.Millisecond, cancel)
				defer stop.Stop()
			}
			start := time.Now()
			id, err := ProbeIdentity(ctx, addr, nil)
			took := time.Since(start)
			if took > tc.within {
				t.Errorf("probe took %s, want under %s", took, tc.within)
			}
			if len(tc.wantErr) == 0 {
				if err != nil || id != tc.wantID {
					t.Fatalf("got %q, %v; want %q", id, err, tc.wantID)
				}
				return
			}
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("got %q, %v; want an error wrapping %v", id, err, want)
				}
			}
			if !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name the address", err)
			}
		})
	}
}

func TestListenRefusesAnOverlongID(t *testing.T) {
	if m, err := Listen("127.0.0.1:0", strings.Repeat("x", MaxNodeIDBytes+1), discardLogger()); err == nil {
		m.Close()
		t.Fatal("an id over the bound was accepted")
	}
}

// Probers that send the header and never read, nor close, hold no handshake
// goroutine: the answer fits in the socket buffer and its write has a
// deadline. The Mux keeps answering and closes promptly.
func TestMuxNeverBlocksOnProbersThatDoNotRead(t *testing.T) {
	m := newTestMuxAs(t, "n1")
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range 64 {
		c, err := net.DialTimeout("tcp", m.Addr().String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if _, err := c.Write(appendMuxHeader(nil, ProbeGroup, "")); err != nil {
			t.Fatal(err)
		}
	}
	waitHandshakesDone(t, m)
	if id, err := ProbeIdentity(context.Background(), m.Addr().String(), nil); err != nil || id != "n1" {
		t.Fatalf("probe after the silent ones: %q, %v", id, err)
	}
	// The silent probers were answered and closed.
	for i, c := range clients[:4] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		id, err := readProbeReply(c)
		if err != nil || id != "n1" {
			t.Fatalf("client %d: %q, %v", i, id, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("client %d: after the answer got %v, want EOF", i, err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked")
	}
}

func TestMuxHeaderAndProbeReplyParsing(t *testing.T) {
	v2 := func(group uint64, idLen byte, id string) []byte {
		return append(append(binary.BigEndian.AppendUint64([]byte(muxMagicV2), group), idLen), id...)
	}
	headers := []struct {
		name    string
		in      []byte
		group   uint64
		cluster string
		n       int // bytes taken
		ok      bool
	}{
		{"v1 group 1", appendMuxHeader(nil, 1, ""), 1, "", muxHeaderLen, true},
		{"v1 probe", appendMuxHeader(nil, ProbeGroup, ""), ProbeGroup, "", muxHeaderLen, true},
		{"v1 trailing stream bytes are not the header's", append(appendMuxHeader(nil, 3, ""), "raft"...), 3, "", muxHeaderLen, true},
		{"v2 group 1 of cluster c1", appendMuxHeader(nil, 1, "c1"), 1, "c1", muxHeaderV2Min + 2, true},
		{"v2 trailing stream bytes", append(appendMuxHeader(nil, 4, "c1"), "raft"...), 4, "c1", muxHeaderV2Min + 2, true},
		{"v2 longest id", v2(1, MaxClusterIDBytes, strings.Repeat("i", MaxClusterIDBytes)), 1, strings.Repeat("i", MaxClusterIDBytes), muxHeaderV2Min + MaxClusterIDBytes, true},
		{"empty", nil, 0, "", 0, false},
		{"v1 short", appendMuxHeader(nil, 1, "")[:muxHeaderLen-1], 0, "", 0, false},
		{"v2 without its length", v2(1, 0, "")[:muxHeaderLen], 0, "", 0, false},
		{"v2 with an empty id", v2(1, 0, ""), 0, "", 0, false},
		{"v2 id over the bound", v2(1, MaxClusterIDBytes+1, strings.Repeat("i", MaxClusterIDBytes+1)), 0, "", 0, false},
		{"v2 id cut short", appendMuxHeader(nil, 1, "cluster")[:muxHeaderV2Min+3], 0, "", 0, false},
		{"bad magic", append([]byte("SSR3"), make([]byte, 8)...), 0, "", 0, false},
	}
	for _, tc := range headers {
		t.Run("header/"+tc.name, func(t *testing.T) {
			h, n, err := parseMuxHeader(tc.in)
			if (err == nil) != tc.ok || h.group != tc.group || h.clusterID != tc.cluster || n != tc.n {
				t.Fatalf("got %+v, %d bytes, %v; want group %d of %q, %d bytes, ok=%v", h, n, err, tc.group, tc.cluster, tc.n, tc.ok)
			}
		})
	}
	reply := func(id string) []byte {
		b, err := appendProbeReply(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	replies := []struct {
		name string
		in   []byte
		id   string
		ok   bool
	}{
		{"id", reply("n1"), "n1", true},
		{"empty id", reply(""), "", true},
		{"bytes after the answer are left unread", append(reply("n1"), "junk"...), "n1", true},
		{"nothing", nil, "", false},
		{"bad magic", []byte("SSH-2.0-OpenSSH\r\n"), "", false},
		{"over the bound", binary.BigEndian.AppendUint16([]byte(muxMagic), MaxNodeIDBytes+1), "", false},
		{"cut short", reply("node-1")[:8], "", false},
	}
	for _, tc := range replies {
		t.Run("reply/"+tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.in)
			id, err := readProbeReply(r)
			if (err == nil) != tc.ok || id != tc.id {
				t.Fatalf("got %q, %v; want %q, ok=%v", id, err, tc.id, tc.ok)
			}
			if !tc.ok && !errors.Is(err, ErrNotRaftPort) {
				t.Fatalf("error %v does not wrap ErrNotRaftPort", err)
			}
			if read := len(tc.in) - r.Len(); read > muxProbeReplyMax {
				t.Fatalf("read %d bytes, bound %d", read, muxProbeReplyMax)
			}
		})
	}
}
