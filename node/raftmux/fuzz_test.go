package raftmux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// FuzzMuxHeader feeds arbitrary bytes as the first bytes of an accepted
// connection. The parsers never panic and read within their bounds; over a
// connection (net.Pipe into the Mux's handshake, so no ports are used up) a
// bad header is closed, a header naming a registered group hands that group
// the connection with the rest of the bytes intact, the probe header is
// answered with the node id, and every handshake goroutine ends.
func FuzzMuxHeader(f *testing.F) {
	for _, seed := range [][]byte{
		append(appendMuxHeader(nil, 1), "raft rpc bytes"...),
		appendMuxHeader(nil, 2),
		appendMuxHeader(nil, 9),
		appendMuxHeader(nil, ProbeGroup),
		append(appendMuxHeader(nil, ProbeGroup), "trailing"...),
		[]byte("SSR"),
		nil,
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		append([]byte("SSR2"), appendMuxHeader(nil, 1)[4:]...),
	} {
		f.Add(seed)
	}
	const nodeID = "fuzz-node"
	m, err := Listen("127.0.0.1:0", nodeID, discardLogger())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	layers := map[uint64]*muxLayer{}
	for _, g := range []uint64{1, 2} {
		l, err := m.Layer(g)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { l.Close() })
		layers[g] = l.(*muxLayer)
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		checkParsers(t, in)

		group, herr := parseMuxHeader(in)
		layer := layers[group]
		if herr != nil {
			layer = nil
		}
		client, server := net.Pipe()
		defer client.Close()
		if !m.serve(server) {
			t.Fatal("mux closed")
		}
		// A group's stream ends with the dialer's close, once the layer has
		// the connection (net.Pipe refuses deadlines once its peer closed,
		// which TCP does not).
		handedOver := make(chan struct{})
		var once sync.Once
		handOver := func() { once.Do(func() { close(handedOver) }) }
		defer handOver()
		wrote := make(chan error, 1)
		go func() {
			_, err := client.Write(in)
			switch {
			case layer != nil:
				<-handedOver
				client.Close()
			case len(in) < muxHeaderLen:
				client.Close() // so the handshake does not wait for more
			}
			wrote <- err
		}()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))

		switch {
		case layer != nil:
			in2, err := acceptWithin(layer, 5*time.Second)
			if err != nil {
				t.Fatalf("group %d never received its connection: %v", group, err)
			}
			handOver()
			in2.SetReadDeadline(time.Now().Add(5 * time.Second))
			rest, err := io.ReadAll(in2)
			in2.Close()
			if err != nil || !bytes.Equal(rest, in[muxHeaderLen:]) {
				t.Fatalf("group %d received %q (%v), want %q", group, rest, err, in[muxHeaderLen:])
			}
		case herr == nil && group == ProbeGroup:
			id, err := readProbeReply(client)
			if err != nil || id != nodeID {
				t.Fatalf("probe answered %q, %v", id, err)
			}
			expectClosed(t, client)
		case len(in) >= muxHeaderLen:
			// Bad magic or a group not hosted here.
			expectClosed(t, client)
		}
		select {
		case <-wrote:
		case <-time.After(5 * time.Second):
			t.Fatal("the dialer's write never ended")
		}
		waitHandshakesDone(t, m)
	})
}

// checkParsers runs the pure parsers on in: no panic, bounded reads, and
// what they accept is exactly what the writers produce.
func checkParsers(t *testing.T, in []byte) {
	g, err := parseMuxHeader(in)
	switch {
	case err == nil && !bytes.Equal(appendMuxHeader(nil, g), in[:muxHeaderLen]):
		t.Fatalf("parsed group %d from %q", g, in[:muxHeaderLen])
	case err != nil && len(in) >= muxHeaderLen && bytes.HasPrefix(in, []byte(muxMagic)):
		t.Fatalf("refused a well-formed header %q: %v", in[:muxHeaderLen], err)
	}
	r := bytes.NewReader(in)
	id, err := readProbeReply(r)
	read := len(in) - r.Len()
	if read > muxProbeReplyMax {
		t.Fatalf("probe reply reader read %d bytes, bound %d", read, muxProbeReplyMax)
	}
	if err == nil {
		want, werr := appendProbeReply(nil, id)
		if werr != nil || !bytes.Equal(want, in[:read]) {
			t.Fatalf("reply %q parsed as id %q", in[:read], id)
		}
	} else if !errors.Is(err, ErrNotRaftPort) {
		t.Fatalf("reply reader error %v does not wrap ErrNotRaftPort", err)
	}
}

func acceptWithin(l *muxLayer, d time.Duration) (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-time.After(d):
		return nil, errors.New("timed out")
	}
}

// expectClosed reads c until the listener's close shows (EOF).
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("connection not closed by the listener: %v", err)
	}
}
