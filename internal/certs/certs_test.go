package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/internal/devcerts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func bundle(t *testing.T, dir string) *devcerts.Bundle {
	t.Helper()
	b, err := devcerts.New(devcerts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(dir, true); err != nil {
		t.Fatal(err)
	}
	return b
}

func nodeTLS(t *testing.T, dir, name string, clientCA bool) *Node {
	t.Helper()
	server := Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if clientCA {
		server.CA = filepath.Join(dir, "ca.pem")
	}
	n, err := LoadNode(server, Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem"), CA: filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// handshake runs one TLS handshake over loopback TCP and returns both
// sides' results and the server's view of the connection. With TLS 1.3 a
// client finishes before the server has checked its certificate, so the
// client also reads once: a refusal arrives there as an alert.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error, state tls.ConnectionState) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type result struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		srv := tls.Server(c, server)
		err = srv.HandshakeContext(ctx)
		if err == nil {
			_, err = srv.Write([]byte{1})
		}
		done <- result{err, srv.ConnectionState()}
	}()
	var d tls.Dialer
	d.Config = client
	c, clientErr := d.DialContext(ctx, "tcp", ln.Addr().String())
	if clientErr == nil {
		defer c.Close()
		_, clientErr = c.Read(make([]byte, 1))
	}
	r := <-done
	return r.err, clientErr, r.state
}

func TestPeerMutualTLS(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	bundle(t, dir)
	bundle(t, other)
	n1, n2 := nodeTLS(t, dir, "n1", false), nodeTLS(t, dir, "n2", false)
	stranger := nodeTLS(t, other, "n2", false) // same name, another CA

	tests := []struct {
		name           string
		server, client *tls.Config
		ok             bool
	}{
		{"same CA", n1.PeerServer(), n2.PeerClient(), true},
		{"client from another CA", n1.PeerServer(), stranger.PeerClient(), false},
		{"server from another CA", stranger.PeerServer(), n2.PeerClient(), false},
		{"client without a certificate", n1.PeerServer(), &tls.Config{InsecureSkipVerify: true, ServerName: PeerServerName}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr, _ := handshake(t, tt.server, tt.client)
			if ok := serr == nil && cerr == nil; ok != tt.ok {
				t.Fatalf("handshake ok=%v (server %v, client %v), want %v", ok, serr, cerr, tt.ok)
			}
		})
	}
}

func TestGRPCPortTellsPeersFromClients(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	b := bundle(t, dir)
	ob := bundle(t, other)
	n1 := nodeTLS(t, dir, "n1", true)
	stranger := nodeTLS(t, other, "n2", false)
	app, _ := b.ClientTLS("app")
	app.ServerName = "localhost"
	plain, _ := b.ClientTLS("")
	plain.ServerName = "localhost"
	foreignApp, _ := ob.ClientTLS("app")
	foreignApp.RootCAs = b.Pool()
	foreignApp.ServerName = "localhost"
	// A client certificate sent under the peer name: it must not pass as a peer.
	appAsPeer := app.Clone()
	appAsPeer.ServerName, appAsPeer.InsecureSkipVerify = PeerServerName, true

	tests := []struct {
		name   string
		client *tls.Config
		ok     bool
		peer   bool
	}{
		{"peer", nodeTLS(t, dir, "n2", false).PeerClient(), true, true},
		{"peer from another CA", stranger.PeerClient(), false, false},
		{"client with a certificate", app, true, false},
		{"client without a certificate (token)", plain, true, false},
		{"client certificate from another CA", foreignApp, false, false},
		{"client certificate under the peer name", appAsPeer, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr, st := handshake(t, n1.GRPCServer(), tt.client)
			if ok := serr == nil && cerr == nil; ok != tt.ok {
				t.Fatalf("handshake ok=%v (server %v, client %v), want %v", ok, serr, cerr, tt.ok)
			}
			if tt.ok && IsPeer(st) != tt.peer {
				t.Fatalf("IsPeer = %v, want %v", IsPeer(st), tt.peer)
			}
		})
	}
}

func TestReloadReplacesCertificatesAndKeepsThemOnBadFiles(t *testing.T) {
	dir := t.TempDir()
	bundle(t, dir)
	n1 := nodeTLS(t, dir, "n1", false)
	n2 := nodeTLS(t, dir, "n2", false)
	serial := func() string {
		t.Helper()
		serr, cerr, _ := handshake(t, n1.PeerServer(), n2.PeerClient())
		if serr != nil || cerr != nil {
			t.Fatalf("handshake: server %v, client %v", serr, cerr)
		}
		return n1.Peer.Certificate().Leaf.SerialNumber.String()
	}
	before := serial()

	// A renewal from a new CA written over the files: both nodes reload.
	bundle(t, dir)
	if err := n1.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := n2.Reload(); err != nil {
		t.Fatal(err)
	}
	after := serial()
	if after == before {
		t.Fatal("reload kept the old certificate")
	}

	// A half-written key: Reload fails and the working pair stays.
	if err := os.WriteFile(filepath.Join(dir, "n1-key.pem"), []byte("-----BEGIN"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n1.Reload(); err == nil {
		t.Fatal("Reload accepted a broken key")
	}
	if got := serial(); got != after {
		t.Fatalf("a failed reload changed the certificate: %s, want %s", got, after)
	}
}

func TestLoadNodeRefusesIncompleteFiles(t *testing.T) {
	dir := t.TempDir()
	bundle(t, dir)
	cert, key, ca := filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"), filepath.Join(dir, "ca.pem")
	tests := []struct {
		name         string
		server, peer Files
		wantNil      bool
	}{
		{"nothing", Files{}, Files{}, true},
		{"server without peer", Files{Cert: cert, Key: key}, Files{}, false},
		{"peer without CA", Files{}, Files{Cert: cert, Key: key}, false},
		{"cert without key", Files{}, Files{Cert: cert, CA: ca}, false},
		{"client CA without server cert", Files{CA: ca}, Files{Cert: cert, Key: key, CA: ca}, false},
		{"CA file of no certificates", Files{}, Files{Cert: cert, Key: key, CA: key}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := LoadNode(tt.server, tt.peer)
			if tt.wantNil {
				if n != nil || err != nil {
					t.Fatalf("LoadNode = %v, %v; want nil, nil", n, err)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadNode accepted it")
			}
		})
	}
	if _, err := LoadNode(Files{}, Files{Cert: cert, Key: key, CA: key}); !errors.Is(err, ErrNoCertificates) {
		t.Fatalf("a key file as CA: %v, want ErrNoCertificates", err)
	}
}
