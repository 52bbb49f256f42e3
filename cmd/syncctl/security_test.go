package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/syncstore/syncstore/internal/devcerts"
	"github.com/syncstore/syncstore/rpc/auth"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// headSync answers Head with 7 and Append with seq 1.
type headSync struct{ syncv1.UnimplementedSyncServer }

func (headSync) Head(context.Context, *syncv1.HeadRequest) (*syncv1.HeadResponse, error) {
	return &syncv1.HeadResponse{HeadSeq: 7}, nil
}

func (headSync) Append(context.Context, *syncv1.AppendRequest) (*syncv1.AppendResponse, error) {
	return &syncv1.AppendResponse{Seq: 1}, nil
}

// secureServer serves headSync over TLS with the authorizer a node uses:
// the tokens of a devcerts bundle written in dir, and its client
// certificates.
func secureServer(t *testing.T) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	b, err := devcerts.New(devcerts.Options{Nodes: []string{"n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(dir, false); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.LoadTokens(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := b.ServerTLS("n1")
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(auth.Config{Tokens: tokens, ClientCerts: true})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.UnaryInterceptor(a.Unary), grpc.StreamInterceptor(a.Stream))
	syncv1.RegisterSyncServer(s, headSync{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), dir
}

// TestSecurityFlags: --ca, --cert, --key, --server-name, --token and
// --token-file (and their environment variables) reach the connection and
// the node's authorizer; contradictions are bad usage.
func TestSecurityFlags(t *testing.T) {
	addr, dir := secureServer(t)
	f := func(name string) string { return filepath.Join(dir, name) }
	secret, err := os.ReadFile(f("token-app"))
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := "--ca=" + f("ca.pem")
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		want  string // in the output, or in the error
		usage bool
	}{
		{name: "token file", args: []string{ca, "--token-file", f("token-app"), "head", "x"}, want: "x head 7"},
		{name: "token flag", args: []string{ca, "--token", string(secret), "append", "x", "hi"}, want: "x seq 1"},
		{name: "reader token reads", args: []string{ca, "--token-file", f("token-reader"), "head", "x"}, want: "x head 7"},
		{name: "reader token writes", args: []string{ca, "--token-file", f("token-reader"), "append", "x", "hi"}, want: "PermissionDenied"},
		{name: "no credential", args: []string{ca, "head", "x"}, want: "Unauthenticated: no credentials"},
		{name: "unknown token", args: []string{ca, "--token", "sst_nope", "head", "x"}, want: "Unauthenticated: unknown token"},
		{name: "client certificate", args: []string{ca, "--cert", f("client-reader.pem"), "--key", f("client-reader-key.pem"), "head", "x"}, want: "x head 7"},
		{name: "server name", args: []string{ca, "--server-name", "n1", "--token-file", f("token-app"), "head", "x"}, want: "x head 7"},
		{name: "wrong server name", args: []string{ca, "--server-name", "n9.example", "--token-file", f("token-app"), "head", "x"}, want: "cannot reach " + addr},
		{name: "environment", env: map[string]string{caEnv: f("ca.pem"), tokenEnv: string(secret)}, args: []string{"head", "x"}, want: "x head 7"},
		{name: "token file from the environment", env: map[string]string{caEnv: f("ca.pem"), tokenFileEnv: f("token-app")}, args: []string{"head", "x"}, want: "x head 7"},
		{name: "client certificate from the environment", env: map[string]string{caEnv: f("ca.pem"), certEnv: f("client-app.pem"), keyEnv: f("client-app-key.pem")}, args: []string{"append", "x", "hi"}, want: "x seq 1"},
		{name: "a flag beats the environment", env: map[string]string{caEnv: f("ca.pem"), tokenEnv: "sst_nope"}, args: []string{"--token-file", f("token-app"), "head", "x"}, want: "x head 7"},
		{name: "token without TLS", args: []string{"--token", string(secret), "head", "x"}, want: "only sent over TLS", usage: true},
		{name: "token and token file", args: []string{ca, "--token", "a", "--token-file", f("token-app"), "head", "x"}, want: "exclude each other", usage: true},
		{name: "empty token file", args: []string{ca, "--token-file", empty, "head", "x"}, want: "the token is empty", usage: true},
		{name: "missing token file", args: []string{ca, "--token-file", f("nope"), "head", "x"}, want: "token file"},
		{name: "cert without key", args: []string{ca, "--cert", f("client-app.pem"), "head", "x"}, want: "--cert and --key go together", usage: true},
		{name: "plaintext to TLS", args: []string{"head", "x"}, want: "cannot reach " + addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{caEnv, certEnv, keyEnv, tokenEnv, tokenFileEnv} {
				t.Setenv(k, tc.env[k])
			}
			out, _, err := runIO(t, context.Background(), nil, append([]string{"--addr", addr}, tc.args...)...)
			got := out
			if err != nil {
				got = describe(err)
			}
			if !strings.Contains(got, tc.want) || errors.As(err, new(usageError)) != tc.usage {
				t.Errorf("got %q (%v); want %q, usage error %t", got, err, tc.want, tc.usage)
			}
		})
	}
}

// TestTokenNotInHelp: the token from the environment is not shown as the
// flag's default.
func TestTokenNotInHelp(t *testing.T) {
	t.Setenv(tokenEnv, "sst_secret")
	if def := newRoot(&globals{out: io.Discard}).PersistentFlags().Lookup("token").DefValue; def != "" {
		t.Fatalf("--token shows the default %q", def)
	}
}
