package devcerts

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readCert parses one PEM certificate file of dir.
func readCert(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", name)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func poolFrom(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(data) {
		t.Fatal("ca.pem: no certificate")
	}
	return p
}

func generate(t *testing.T, opts Options) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if err := Generate(dir, opts); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return dir
}

func TestNodeCertsVerifyAgainstTheirCAOnly(t *testing.T) {
	dir := generate(t, Options{Nodes: []string{"a", "b"}, Hosts: []string{"syncd.example", "10.1.2.3"}})
	other := generate(t, Options{Nodes: []string{"a", "b"}})
	pool, otherPool := poolFrom(t, dir), poolFrom(t, other)
	tests := []struct {
		name    string
		certDir string
		file    string
		pool    *x509.CertPool
		host    string
		eku     x509.ExtKeyUsage
		wantErr bool
	}{
		{"node as server, by name", dir, "a.pem", pool, "a", x509.ExtKeyUsageServerAuth, false},
		{"node as client (peer mTLS)", dir, "a.pem", pool, "", x509.ExtKeyUsageClientAuth, false},
		{"localhost", dir, "b.pem", pool, "localhost", x509.ExtKeyUsageServerAuth, false},
		{"127.0.0.1", dir, "b.pem", pool, "127.0.0.1", x509.ExtKeyUsageServerAuth, false},
		{"::1", dir, "b.pem", pool, "::1", x509.ExtKeyUsageServerAuth, false},
		{"extra DNS host", dir, "b.pem", pool, "syncd.example", x509.ExtKeyUsageServerAuth, false},
		{"extra IP host", dir, "a.pem", pool, "10.1.2.3", x509.ExtKeyUsageServerAuth, false},
		{"another node's name", dir, "a.pem", pool, "b", x509.ExtKeyUsageServerAuth, true},
		{"a host not asked for", other, "a.pem", otherPool, "syncd.example", x509.ExtKeyUsageServerAuth, true},
		{"other CA's node as server", other, "a.pem", pool, "a", x509.ExtKeyUsageServerAuth, true},
		{"other CA's node as peer client", other, "a.pem", pool, "", x509.ExtKeyUsageClientAuth, true},
		{"client cert as client", dir, "client-app.pem", pool, "", x509.ExtKeyUsageClientAuth, false},
		{"client cert as server", dir, "client-app.pem", pool, "", x509.ExtKeyUsageServerAuth, true},
		{"other CA's client cert", other, "client-admin.pem", pool, "", x509.ExtKeyUsageClientAuth, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readCert(t, tt.certDir, tt.file)
			_, err := c.Verify(x509.VerifyOptions{Roots: tt.pool, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.eku}})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify: err %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultsAndIdentities(t *testing.T) {
	dir := generate(t, Options{})
	for _, n := range DefaultNodes {
		if c := readCert(t, dir, n+".pem"); c.Subject.CommonName != n {
			t.Errorf("%s.pem: CN %q", n, c.Subject.CommonName)
		}
	}
	for _, r := range Roles {
		c := readCert(t, dir, "client-"+r+".pem")
		if c.Subject.CommonName != r || len(c.Subject.OrganizationalUnit) != 1 || c.Subject.OrganizationalUnit[0] != r {
			t.Errorf("client-%s.pem: CN %q OU %q, want both %q", r, c.Subject.CommonName, c.Subject.OrganizationalUnit, r)
		}
	}
	if ca := readCert(t, dir, "ca.pem"); !ca.IsCA {
		t.Error("ca.pem is not a CA")
	}
}

func TestFileModes(t *testing.T) {
	dir := generate(t, Options{Nodes: []string{"x"}})
	want := map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600, "x.pem": 0o644, "x-key.pem": 0o600,
		"client-admin-key.pem": 0o600, "client-reader.pem": 0o644, "tokens.txt": 0o644,
		"token-admin": 0o600, "token-app": 0o600, "token-reader": 0o600, "gossip.key": 0o600,
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", name, fi.Mode().Perm(), mode)
		}
	}
}

func TestTokenFileHashesTheSecrets(t *testing.T) {
	dir := generate(t, Options{})
	data, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{} // name -> role, hash
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("line %q: want NAME ROLE SHA256HEX", line)
		}
		if len(f[2]) != 64 || strings.ToLower(f[2]) != f[2] {
			t.Fatalf("line %q: hash is not 64 lowercase hex digits", line)
		}
		got[f[0]] = [2]string{f[1], f[2]}
	}
	if len(got) != len(Roles) {
		t.Fatalf("token file has %d tokens, want %d: %q", len(got), len(Roles), data)
	}
	secrets := map[string]bool{}
	for _, r := range Roles {
		secret, err := os.ReadFile(filepath.Join(dir, "token-"+r))
		if err != nil {
			t.Fatal(err)
		}
		secrets[string(secret)] = true
		if got[r][0] != r || got[r][1] != HashToken(string(secret)) {
			t.Errorf("token %s: line %v does not match role %s and the secret's hash %s", r, got[r], r, HashToken(string(secret)))
		}
	}
	if len(secrets) != len(Roles) {
		t.Error("two roles share a secret")
	}
	// A known answer guards HashToken itself (the lines are checked with it).
	if h := HashToken("abc"); h != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashToken(abc) = %s", h)
	}
}

func TestGossipKey(t *testing.T) {
	dir := generate(t, Options{})
	data, err := os.ReadFile(filepath.Join(dir, "gossip.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(string(data))
	if err != nil || len(key) != 32 {
		t.Fatalf("gossip.key %q: %d bytes, err %v; want 32 bytes of base64", data, len(key), err)
	}
}

func TestWriteRefusesExistingFilesAndChangesNothing(t *testing.T) {
	dir := generate(t, Options{})
	before, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// A new node's files do not exist yet: even they must not be written.
	err = Generate(dir, Options{Nodes: []string{"n1", "n9"}})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Generate: %v, want ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "n9.pem")); !os.IsNotExist(err) {
		t.Errorf("n9.pem was written by a refused Generate (stat: %v)", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if !bytes.Equal(before, after) {
		t.Error("ca.pem changed by a refused Generate")
	}
	if err := Generate(dir, Options{Overwrite: true}); err != nil {
		t.Fatalf("Generate with Overwrite: %v", err)
	}
	after, _ = os.ReadFile(filepath.Join(dir, "ca.pem"))
	if bytes.Equal(before, after) {
		t.Error("ca.pem not replaced with Overwrite")
	}
}

func TestBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"empty name", Options{Nodes: []string{""}}, "node name"},
		{"path in name", Options{Nodes: []string{"../n1"}}, "node name"},
		{"clashes with the CA", Options{Nodes: []string{"ca"}}, "clash"},
		{"clashes with a client", Options{Nodes: []string{"client-app"}}, "clash"},
		{"twice", Options{Nodes: []string{"n1", "n1"}}, "twice"},
		{"bad host", Options{Hosts: []string{"http://x"}}, "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			err := Generate(dir, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Generate: %v, want an error containing %q", err, tt.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("a refused Generate made %s", dir)
			}
		})
	}
}

// TestMutualTLSHandshake runs real handshakes with the in-memory configs:
// a peer of the same CA gets in, one of another CA does not.
func TestMutualTLSHandshake(t *testing.T) {
	b, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		client  *Bundle // whose certificate the client presents
		trust   *Bundle // whose CA the client trusts
		wantErr bool
	}{
		{"same CA", b, b, false},
		{"client from another CA", stranger, b, true},
		{"server from another CA", b, stranger, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvCfg, err := b.ServerTLS("n1")
			if err != nil {
				t.Fatal(err)
			}
			srvCfg.ClientAuth = tls.RequireAndVerifyClientCert
			cliCfg := &tls.Config{
				RootCAs:      tt.trust.Pool(),
				Certificates: []tls.Certificate{tt.client.Nodes["n2"].TLSCertificate()},
				ServerName:   "n1",
				MinVersion:   tls.VersionTLS12,
			}
			c1, c2 := net.Pipe()
			defer c1.Close()
			defer c2.Close()
			srvErr := make(chan error, 1)
			go func() {
				s := tls.Server(c1, srvCfg)
				err := s.Handshake()
				if err == nil {
					// TLS 1.3 clients learn of a refused certificate on
					// their first read: make the server's verdict visible.
					_, err = s.Write([]byte("ok"))
				}
				c1.Close()
				srvErr <- err
			}()
			cl := tls.Client(c2, cliCfg)
			err = cl.Handshake()
			if err == nil {
				buf := make([]byte, 2)
				_, err = cl.Read(buf)
			}
			c2.Close()
			sErr := <-srvErr
			if (err != nil) != tt.wantErr || (sErr != nil) != tt.wantErr {
				t.Fatalf("client err %v, server err %v; want errors %v", err, sErr, tt.wantErr)
			}
		})
	}
}

func TestClientTLSPresentsRoleCertificate(t *testing.T) {
	b, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := b.ClientTLS(RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) != 1 || cfg.Certificates[0].Leaf.Subject.OrganizationalUnit[0] != RoleReader {
		t.Fatalf("ClientTLS(reader) certificates: %+v", cfg.Certificates)
	}
	if _, err := b.ClientTLS("root"); err == nil {
		t.Fatal("ClientTLS(root): no error for an unknown role")
	}
	if b.Token(RoleApp) == "" || b.Token("root") != "" {
		t.Fatal("Token: wrong secret lookup")
	}
}
