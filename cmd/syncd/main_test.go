package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/devcerts"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/rpc/client"
)

// TestCommandLine: --help succeeds, and stray words and bad flags are
// usage errors (exit 2) before anything starts. Each case gives an address
// that cannot be listened on first, so a command line that is wrongly
// taken fails at the listen instead of running a node.
func TestCommandLine(t *testing.T) {
	bad := []string{"--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:99999"}
	tokens := filepath.Join(t.TempDir(), "tokens.txt")
	if err := os.WriteFile(tokens, []byte("app1 app "+strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	if err := devcerts.Generate(certDir, devcerts.Options{}); err != nil {
		t.Fatal(err)
	}
	peerFlags := []string{"--peer-cert", filepath.Join(certDir, "n1.pem"), "--peer-key", filepath.Join(certDir, "n1-key.pem"), "--peer-ca", filepath.Join(certDir, "ca.pem")}
	cases := []struct {
		args      []string
		wantHelp  bool
		wantUsage string
		wantErr   string // a failure that is not bad usage
	}{
		{args: []string{"--help"}, wantHelp: true},
		{args: []string{"-h"}, wantHelp: true},
		{args: []string{"version"}, wantUsage: `unexpected argument "version"`},
		{args: []string{"--join", "127.0.0.1:7400", "extra"}, wantUsage: `unexpected argument "extra"`},
		{args: []string{"--no-such-flag"}, wantUsage: "flag provided but not defined"},
		{args: []string{"--shards", "many"}, wantUsage: "invalid value"},
		{args: []string{"--log-level", "loud"}, wantUsage: "--log-level"},
		{args: []string{"--log-format", "xml"}, wantUsage: "--log-format"},
		{args: []string{"--grpc-addr", "0.0.0.0:99999"}, wantUsage: "refusing to listen on --grpc-addr 0.0.0.0:99999 without TLS"},
		{args: []string{"--grpc-addr", ":99999"}, wantUsage: "refusing to listen on --grpc-addr :99999"},
		{args: []string{"--raft-addr", "10.1.2.3:0"}, wantUsage: "refusing to listen on --raft-addr 10.1.2.3:0"},
		{args: []string{"--debug-addr", "0.0.0.0:0"}, wantUsage: "without TLS (--peer-cert"},
		{args: append([]string{"--grpc-addr", "0.0.0.0:99999"}, peerFlags...), wantUsage: "without authentication (--token-file or --client-ca)"},
		{args: []string{"--grpc-addr", "0.0.0.0:99999", "--insecure"}, wantErr: "listen"},
		{args: append([]string{"--grpc-addr", "0.0.0.0:99999", "--token-file", tokens}, peerFlags...), wantErr: "listen"},
		{args: []string{"--token-file", tokens}, wantUsage: "need TLS"},
		{args: []string{"--tls-cert", filepath.Join(certDir, "n1.pem"), "--tls-key", filepath.Join(certDir, "n1-key.pem")}, wantUsage: "needs peer TLS too"},
		{args: []string{"--peer-cert", filepath.Join(certDir, "n1.pem")}, wantUsage: "peer TLS needs --peer-cert, --peer-key and --peer-ca"},
		{args: []string{"--gossip-key", "not base64!"}, wantUsage: "--gossip-key: key 1 is not base64"},
		{args: []string{"--gossip-key", "c2hvcnQ="}, wantUsage: "has 5 bytes"},
		{args: []string{"--token-file", filepath.Join(certDir, "ca.pem")}, wantUsage: "bad token file"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stderr := os.Stderr
			devnull, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			defer devnull.Close()
			os.Stderr = devnull // the flag package's usage text
			err = run(append(append([]string{}, bad...), tc.args...), nil)
			os.Stderr = stderr
			var ue usageError
			switch {
			case tc.wantHelp && !errors.Is(err, flag.ErrHelp):
				t.Fatalf("got %v, want the help", err)
			case tc.wantUsage != "" && (!errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantUsage)):
				t.Fatalf("got %v, want a usage error saying %q", err, tc.wantUsage)
			case tc.wantErr != "" && (err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want a failure (not bad usage) saying %q", err, tc.wantErr)
			}
		})
	}
}

// proc is a syncd process started by a test.
type proc struct {
	cmd    *exec.Cmd
	addrs  chan [2]string // gRPC, Raft
	mu     sync.Mutex
	log    []string
	exited chan error
}

var listening = regexp.MustCompile(`msg="syncd listening".* grpc=(\S+) raft=(\S+)`)

func startSyncd(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addrs: make(chan [2]string, 1), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				p.addrs <- [2]string{m[1], m[2]}
			}
		}
		io.Copy(io.Discard, stderr)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// addr waits for the process to listen and returns its gRPC and Raft
// addresses.
func (p *proc) addr(t *testing.T) (grpcAddr, raftAddr string) {
	t.Helper()
	select {
	case a := <-p.addrs:
		return a[0], a[1]
	case err := <-p.exited:
		t.Fatalf("syncd exited before listening: %v\n%s", err, p.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("syncd did not log its address\n%s", p.logs())
	}
	return "", ""
}

// logged reports whether any line the process logged holds s.
func (p *proc) logged(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.log, func(l string) bool { return strings.Contains(l, s) })
}

// logs returns the last lines the process logged.
func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log[max(0, len(p.log)-15):], "\n")
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("syncd exited with %v\n%s", err, p.logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("syncd did not stop on SIGTERM\n%s", p.logs())
	}
}

// TestSyncdBinary builds syncd and runs it as real processes: a bootstrap
// node, a second node that joins it, appends through either, a clean stop
// on SIGTERM, and a restart that keeps the data.
func TestSyncdBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "syncd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	local := []string{"--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"}

	d1 := filepath.Join(dir, "n1")
	n1 := startSyncd(t, bin, append([]string{"--node-id", "n1", "--data-dir", d1}, local...)...)
	a1, r1 := n1.addr(t)
	n2 := startSyncd(t, bin, append([]string{"--node-id", "n2", "--data-dir", filepath.Join(dir, "n2"), "--join", a1}, local...)...)
	a2, r2 := n2.addr(t)

	cl, err := client.New([]string{a2}, client.Options{}) // a follower: writes are forwarded
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 1; i <= 3; i++ {
		resp, err := cl.Append(ctx, "alice", []byte(fmt.Sprint(i)), client.AppendOptions{})
		if err != nil || resp.GetSeq() != uint64(i) {
			t.Fatalf("append %d: seq %d, %v\n%s", i, resp.GetSeq(), err, n2.logs())
		}
	}
	n2.stop(t)
	n1.stop(t)
	if _, err := os.Stat(filepath.Join(d1, "storage", "state.db")); err != nil {
		t.Fatalf("no state file after stop: %v", err)
	}

	// Both come back on their addresses (peers know each other by them);
	// n1's default --bootstrap is ignored since its data dir has state.
	n1 = startSyncd(t, bin, "--node-id", "n1", "--data-dir", d1, "--grpc-addr", a1, "--raft-addr", r1, "--gossip-addr", "127.0.0.1:0")
	n1.addr(t)
	// --join is ignored on a restart, and the node says so (not "joined").
	n2 = startSyncd(t, bin, "--node-id", "n2", "--data-dir", filepath.Join(dir, "n2"), "--grpc-addr", a2, "--raft-addr", r2, "--gossip-addr", "127.0.0.1:0", "--join", a1)
	n2.addr(t)
	head, err := cl.Head(ctx, "alice", client.Linearizable)
	if err != nil || head != 3 {
		t.Fatalf("head after restart: %d, %v\n%s\n%s", head, err, n1.logs(), n2.logs())
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !n2.logged("--join ignored") || n2.logged("joined the cluster") {
			return fmt.Errorf("restarted n2 logged:\n%s", n2.logs())
		}
		return nil
	})
	n1.stop(t)
	n2.stop(t)
}

// captureStdout runs fn with os.Stdout sent to a file and returns what it
// printed.
func captureStdout(t *testing.T, fn func() error) (string, error) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdout
	os.Stdout = f
	err = fn()
	os.Stdout = old
	b, rerr := os.ReadFile(f.Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	return string(b), err
}

// TestPrintConfigOfSyncd: syncd's own flags from all four sources, the
// secret redacted, and --version.
func TestPrintConfigOfSyncd(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "syncd.toml")
	if err := os.WriteFile(cfgFile, []byte("shards = 3\ngrpc-addr = \"127.0.0.1:7999\"\nlog-level = \"error\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := "c2VjcmV0LWdvc3NpcC1rZXktb2YtMzItYnl0ZXMhISE=" // 32 bytes
	env := []string{"SYNCD_SHARDS=5", "SYNCD_LOG_LEVEL=warn", "SYNCD_GOSSIP_KEY=" + key}
	out, err := captureStdout(t, func() error {
		return run([]string{"--config", cfgFile, "--shards", "7", "--print-config"}, env)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^shards = 7\b.*from: flag`),
		regexp.MustCompile(`(?m)^log-level = "warn".*from: env SYNCD_LOG_LEVEL`),
		regexp.MustCompile(`(?m)^grpc-addr = "127.0.0.1:7999".*from: file`),
		regexp.MustCompile(`(?m)^gossip-key = "<redacted>"`),
		regexp.MustCompile(`(?m)^dedupe-window = "24h0m0s".*from: default`),
	} {
		if !want.MatchString(out) {
			t.Errorf("--print-config lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, key) {
		t.Fatal("--print-config printed the gossip key")
	}
	out, err = captureStdout(t, func() error { return run([]string{"--version"}, nil) })
	if err != nil || !strings.HasPrefix(out, "syncd ") || !strings.Contains(out, "go1.") {
		t.Fatalf("--version: %q, %v", out, err)
	}
}
