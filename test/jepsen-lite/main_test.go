package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestShortRun is the CI run: three nodes on their own network namespaces,
// every fault kind once (seven periods of 12 s), then the checkers. It skips
// where namespaces cannot be made (not root, no iproute2), saying why.
func TestShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("a two-minute fault run")
	}
	if err := canMakeHosts(); err != nil {
		// As root, install what is missing (iproute2, iptables) and look again.
		if out, ierr := exec.Command("../../scripts/install-test-deps.sh").CombinedOutput(); ierr != nil {
			t.Logf("install-test-deps: %v: %s", ierr, out)
		}
		if err := canMakeHosts(); err != nil {
			t.Skip(err)
		}
	}
	o := options{
		repo:       "../..",
		nodes:      3,
		duration:   time.Duration(len(faultKinds)) * 9 * time.Second,
		seed:       1,
		out:        keptOnFailure(t),
		shards:     4,
		workers:    8,
		faultEvery: 9 * time.Second, // every kind once; each fault lasts 4.5 s, longer than an election
		settle:     90 * time.Second,
	}
	summary, err := runTest(context.Background(), o, testLog{t})
	if err != nil {
		if errors.Is(err, errNoHosts) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	if summary != "jepsen-lite: VALID" {
		logRecoveries(t, o.out, o.nodes)
		t.Fatalf("%s (run dir %s)", summary, o.out)
	}
}

// keptOnFailure is a run directory that is removed when the test passes
// and kept (logs, history, state) when it fails, so that a CI failure can
// be read afterwards.
func keptOnFailure(t *testing.T) string {
	dir, err := os.MkdirTemp("", "jepsen-lite-short-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("run dir kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// recoveryLine marks the log lines that say how a node rebuilt or repaired
// its state: what a failed run's CI output must show, since its run
// directory stays on a machine nobody can read afterwards.
var recoveryLine = regexp.MustCompile(`storage: |the state|restored|replaying|fenced|rebuil|damaged|diverge|level=ERROR msg="(fsm|node)`)

// logRecoveries prints each node's recovery lines (at most 40 per node).
func logRecoveries(t *testing.T, dir string, nodes int) {
	for i := 1; i <= nodes; i++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i)))
		if err != nil {
			t.Logf("n%d's log: %v", i, err)
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if recoveryLine.MatchString(l) {
				lines = append(lines, l)
			}
		}
		t.Logf("n%d: %d recovery lines (the last 40):\n%s", i, len(lines), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}
