package raftmux

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/certs"
	"github.com/syncstore/syncstore/internal/devcerts"
)

// peerTLS writes a fresh CA with nodes n1, n2 into a directory and returns
// the TLS of node name.
func peerTLS(t *testing.T, dir, name string) *certs.Node {
	t.Helper()
	n, err := certs.LoadNode(certs.Files{}, certs.Files{
		Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem"), CA: filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := devcerts.Generate(dir, devcerts.Options{Nodes: []string{"n1", "n2"}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tlsMux(t *testing.T, id string, n *certs.Node) *Mux {
	t.Helper()
	var opts []Option
	if n != nil {
		opts = append(opts, WithTLS(n.PeerServer(), n.PeerClient()))
	}
	m, err := Listen("127.0.0.1:0", id, discardLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// A node with a certificate from the cluster's CA carries a group's
// traffic; one from another CA, or one speaking plaintext, reaches no
// group and cannot even learn the node's id.
func TestMuxTLSAdmitsOnlyPeersOfItsCA(t *testing.T) {
	cluster, other := writeCA(t), writeCA(t)
	server := tlsMux(t, "n1", peerTLS(t, cluster, "n1"))
	in, err := server.Layer(1)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	addr := server.Addr().String()

	tests := []struct {
		name string
		peer *certs.Node
		ok   bool
	}{
		{"same CA", peerTLS(t, cluster, "n2"), true},
		{"another CA", peerTLS(t, other, "n2"), false},
		{"plaintext", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dialer := tlsMux(t, "n2", tt.peer)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var probeTLS *tls.Config
			if tt.peer != nil {
				probeTLS = tt.peer.PeerClient()
			}
			id, err := ProbeIdentity(ctx, addr, probeTLS)
			if tt.ok != (err == nil && id == "n1") {
				t.Fatalf("probe: %q, %v", id, err)
			}
			if !tt.ok && tt.peer != nil && !errors.Is(err, ErrPeerTLS) {
				t.Fatalf("probe with a foreign certificate: %v, want ErrPeerTLS", err)
			}

			out, err := dialer.Layer(1)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			c, err := out.Dial(raftAddr(addr), 2*time.Second)
			if err == nil {
				defer c.Close()
				_, err = c.Write([]byte("entry"))
			}
			if !tt.ok {
				// Dial may succeed up to the write (TLS 1.3 checks the client's
				// certificate after the client finished): the server must close
				// it without handing it to the group.
				if err == nil {
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					_, err = io.ReadFull(c, make([]byte, 1))
				}
				if err == nil {
					t.Fatal("a foreign connection was kept open")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := in.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(got, buf); err != nil || string(buf) != "entry" {
				t.Fatalf("group read %q, %v", buf, err)
			}
		})
	}
}
