package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRefusedAddressFailsFast: a command against an address that refuses
// connections fails at once (exit 1), naming the address and the cause,
// whichever API it uses; an address that is not host:port is bad usage.
func TestRefusedAddressFailsFast(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	for _, args := range [][]string{
		{"head", "x"},
		{"append", "x", "hi"},
		{"pull", "x"},
		{"watch", "x"},
		{"collection", "watch", "c"},
		{"status"},
		{"node", "list"},
	} {
		start := time.Now()
		// watch has no --timeout: the context bounds it if it does not fail fast.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := runIO(t, ctx, nil, append([]string{"--addr", addr, "--timeout", "10s"}, args...)...)
		cancel()
		took := time.Since(start)
		if err == nil || errors.As(err, new(usageError)) || !strings.Contains(describe(err), "cannot reach "+addr+": connect: connection refused") {
			t.Errorf("%v: got %v; want a failure naming %s", args, err, addr)
		}
		if took > 500*time.Millisecond {
			t.Errorf("%v: failed after %v; want well under a second", args, took)
		}
	}
	for _, bad := range []string{"nonsense", "127.0.0.1", addr + ",host:port"} {
		_, err := run(t, bad, "head", "x")
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "is not host:port") {
			t.Errorf("--addr %s: got %v; want a usage error", bad, err)
		}
	}
}

type codedError int

func (c codedError) Error() string { return "coded" }
func (c codedError) ExitCode() int { return int(c) }

// TestExitStatus: main exits 2 for bad usage, with an error's own code
// when it has one, else 1.
func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{usageError{errors.New("bad flag")}, exitUsage},
		{codedError(3), 3},
		{fmt.Errorf("status: %w", codedError(4)), 4},
		{errors.New("refused"), exitFailed},
	} {
		if got := exitStatus(tc.err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.want)
		}
	}
}
