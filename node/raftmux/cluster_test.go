package raftmux

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func newClusterMux(t *testing.T, node, cluster string, opts ...Option) *Mux {
	t.Helper()
	m, err := Listen("127.0.0.1:0", node, discardLogger(), append([]Option{WithClusterID(cluster)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func layer(t *testing.T, m *Mux, group uint64) *muxLayer {
	t.Helper()
	l, err := m.Layer(group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*muxLayer)
}

// reaches dials group 1 of to (whose layer is in) from a layer of from and
// reports whether in got the connection (the byte written through
// arrives) rather than the listener closing it.
func reaches(t *testing.T, from, to *Mux, in *muxLayer) bool {
	t.Helper()
	out, err := from.Layer(1)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	c, err := out.Dial(raftAddr(to.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{42}) // an error shows as the close below
	closed := make(chan error, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1)) // the listener's side never writes
		closed <- err
	}()
	select {
	case got := <-in.accept:
		defer got.Close()
		b := make([]byte, 1)
		got.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(got, b); err != nil || b[0] != 42 {
			t.Fatalf("delivered connection read %v, %v", b, err)
		}
		c.Close()
		<-closed
		return true
	case err := <-closed:
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a connection was neither delivered nor closed")
		}
		return false
	}
}

func TestMuxAdmitsOnlyItsOwnCluster(t *testing.T) {
	tests := []struct {
		name             string
		listener, dialer string
		want             bool
	}{
		{"same cluster", "cluster-a", "cluster-a", true},
		{"another cluster", "cluster-a", "cluster-b", false},
		{"a dialer without a cluster (v1)", "cluster-a", "", false},
		{"a listener without a cluster takes one", "", "cluster-b", true},
		{"neither has one (before cluster ids)", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := newClusterMux(t, "to", tt.listener)
			in := layer(t, to, 1)
			from := newClusterMux(t, "from", tt.dialer)
			if got := reaches(t, from, to, in); got != tt.want {
				t.Fatalf("delivered %v, want %v", got, tt.want)
			}
			wantRefused := uint64(0)
			if !tt.want {
				wantRefused = 1
			}
			if got := to.RefusedForeign(); got != wantRefused {
				t.Fatalf("RefusedForeign %d, want %d", got, wantRefused)
			}
			if to.ClusterID() != tt.listener {
				t.Fatalf("the listener's cluster id became %q without adoption", to.ClusterID())
			}
			// The identity probe answers whatever the prober's cluster.
			if id, err := ProbeIdentity(context.Background(), to.Addr().String(), nil); err != nil || id != "to" {
				t.Fatalf("probe: %q, %v", id, err)
			}
			waitHandshakesDone(t, to)
		})
	}
}

// A node waiting to be joined takes the cluster id of the first
// connection that carries one, records it, and refuses other clusters from
// then on.
func TestMuxAdoptsTheFirstClusterID(t *testing.T) {
	var mu sync.Mutex
	var adopted []string
	to := newClusterMux(t, "joiner", "", WithAdoption(func(id string) {
		mu.Lock()
		defer mu.Unlock()
		adopted = append(adopted, id)
	}))
	in := layer(t, to, 1)
	if !reaches(t, newClusterMux(t, "leader-a", "cluster-a"), to, in) {
		t.Fatal("the first cluster's leader was refused")
	}
	steps := []struct {
		name   string
		dialer string
		want   bool
	}{
		{"the same cluster again", "cluster-a", true},
		{"another cluster", "cluster-b", false},
		{"no cluster", "", false},
	}
	for _, s := range steps {
		if got := reaches(t, newClusterMux(t, "other", s.dialer), to, in); got != s.want {
			t.Fatalf("%s: delivered %v, want %v", s.name, got, s.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(adopted) != 1 || adopted[0] != "cluster-a" || to.ClusterID() != "cluster-a" {
		t.Fatalf("adopted %v, cluster id %q", adopted, to.ClusterID())
	}
	if err := to.SetClusterID("cluster-b"); err == nil {
		t.Fatal("SetClusterID moved an adopted mux to another cluster")
	}
}

func TestMuxSetClusterID(t *testing.T) {
	m := newClusterMux(t, "n", "")
	steps := []struct {
		name string
		id   string
		ok   bool
		want string
	}{
		{"empty", "", false, ""},
		{"too long", string(make([]byte, MaxClusterIDBytes+1)), false, ""},
		{"first", "cluster-a", true, "cluster-a"},
		{"same again", "cluster-a", true, "cluster-a"},
		{"another", "cluster-b", false, "cluster-a"},
	}
	for _, s := range steps {
		if err := m.SetClusterID(s.id); (err == nil) != s.ok || m.ClusterID() != s.want {
			t.Fatalf("%s: %v, cluster id %q; want ok %v, %q", s.name, err, m.ClusterID(), s.ok, s.want)
		}
	}
	// Its dials now carry the id, and it refuses dialers without one.
	peer := newClusterMux(t, "peer", "cluster-a")
	if !reaches(t, m, peer, layer(t, peer, 1)) {
		t.Fatal("a dial of cluster-a was refused by cluster-a")
	}
	if reaches(t, newClusterMux(t, "legacy", ""), m, layer(t, m, 1)) {
		t.Fatal("a dialer without a cluster id reached a mux that has one")
	}
}

func TestListenRefusesAnOverlongClusterID(t *testing.T) {
	if m, err := Listen("127.0.0.1:0", "n", discardLogger(), WithClusterID(string(make([]byte, MaxClusterIDBytes+1)))); err == nil {
		m.Close()
		t.Fatal("Listen took a cluster id over the bound")
	}
}
