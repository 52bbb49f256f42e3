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
// connection to a mux of cluster fuzzCluster. The parsers never panic and
// read within their bounds; over a connection (net.Pipe into the Mux's
// handshake, so no ports are used up) a bad header is closed, a header of
// another cluster or of none (v1) is closed, a v2 header of this cluster
// naming a registered group hands that group the connection with the rest
// of the bytes intact, the probe header (either version, any cluster) is
// answered with the node id, and every handshake goroutine ends.
func FuzzMuxHeader(f *testing.F) {
	const fuzzCluster = "fuzz-cluster"
	for _, seed := range [][]byte{
		append(appendMuxHeader(nil, 1, fuzzCluster), "raft rpc bytes"...),
		appendMuxHeader(nil, 2, fuzzCluster),
		appendMuxHeader(nil, 9, fuzzCluster),
		append(appendMuxHeader(nil, 1, ""), "raft rpc bytes"...), // v1: no cluster
		append(appendMuxHeader(nil, 1, "another-cluster"), "raft rpc bytes"...),
		appendMuxHeader(nil, 1, fuzzCluster)[:muxHeaderLen+3], // id cut short
		append(appendMuxHeader(nil, 1, "")[:muxHeaderLen:muxHeaderLen], 0),
		append([]byte("SSR2"), appendMuxHeader(nil, 1, "")[4:]...), // v2 without its length byte
		append(append([]byte("SSR2"), appendMuxHeader(nil, 1, "")[4:]...), 0),
		append(append([]byte("SSR2"), appendMuxHeader(nil, 1, "")[4:]...), MaxClusterIDBytes+1),
		append(append([]byte("SSR2"), appendMuxHeader(nil, 1, "")[4:]...), 255),
		appendMuxHeader(nil, ProbeGroup, ""),
		appendMuxHeader(nil, ProbeGroup, "another-cluster"),
		append(appendMuxHeader(nil, ProbeGroup, ""), "trailing"...),
		[]byte("SSR"),
		nil,
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		append([]byte("SSR3"), appendMuxHeader(nil, 1, "")[4:]...),
	} {
		f.Add(seed)
	}
	const nodeID = "fuzz-node"
	m, err := Listen("127.0.0.1:0", nodeID, discardLogger(), WithClusterID(fuzzCluster))
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

		h, hlen, herr := parseMuxHeader(in)
		group := h.group
		layer := layers[group]
		if herr != nil || h.clusterID != fuzzCluster {
			layer = nil
		}
		short := errors.Is(herr, errMuxShortHeader)
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
			case short:
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
			if err != nil || !bytes.Equal(rest, in[hlen:]) {
				t.Fatalf("group %d received %q (%v), want %q", group, rest, err, in[hlen:])
			}
		case herr == nil && group == ProbeGroup:
			id, err := readProbeReply(client)
			if err != nil || id != nodeID {
				t.Fatalf("probe answered %q, %v", id, err)
			}
			expectClosed(t, client)
		case !short:
			// Bad magic or length, another cluster's, or a group not hosted here.
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
	h, n, err := parseMuxHeader(in)
	switch {
	case err == nil && (n > len(in) || !bytes.Equal(appendMuxHeader(nil, h.group, h.clusterID), in[:n])):
		t.Fatalf("parsed %+v (%d bytes) from %q", h, n, in)
	case err != nil && len(in) >= muxHeaderLen && bytes.HasPrefix(in, []byte(muxMagic)):
		t.Fatalf("refused a well-formed v1 header %q: %v", in[:muxHeaderLen], err)
	case err != nil && len(in) > muxHeaderLen && bytes.HasPrefix(in, []byte(muxMagicV2)) &&
		in[muxHeaderLen] > 0 && int(in[muxHeaderLen]) <= MaxClusterIDBytes && len(in) >= muxHeaderV2Min+int(in[muxHeaderLen]):
		t.Fatalf("refused a well-formed v2 header %q: %v", in, err)
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
