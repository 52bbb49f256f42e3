// Package testproc runs a built binary (syncd) as a real process in a test:
// its stderr is kept, lines can be waited for, and the process is killed
// when the test ends.
package testproc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles pkg (e.g. "github.com/syncstore/syncstore/cmd/syncd") into
// dir and returns the binary's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// Proc is a running process.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	grew   chan struct{} // closed and replaced when a line arrives
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// Start runs bin with args; name labels its log in failures.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{Name: name, cmd: cmd, grew: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.grew)
			p.grew = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s's last lines:\n%s", name, p.Tail(25))
		}
	})
	return p
}

// Tail is the last n lines the process logged.
func (p *Proc) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-n):], "\n")
}

// Lines counts the lines logged so far (a mark for WaitLine's from).
func (p *Proc) Lines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// WaitLine waits until a line at index from or later matches re and returns
// its submatches; it fails the test on timeout or exit.
func (p *Proc) WaitLine(t testing.TB, from int, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := from; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if m := re.FindStringSubmatch(p.lines[i]); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.exited:
			if p.Lines() > i {
				continue
			}
			t.Fatalf("%s exited (%v) before logging %q", p.Name, p.err, re)
		case <-deadline.C:
			t.Fatalf("%s did not log %q within %v", p.Name, re, timeout)
		}
	}
}

// Signal sends sig.
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.Name, err)
	}
}

// Wait waits for the process to exit and returns Wait's error.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.Name, timeout)
		return nil
	}
}

// Listening matches syncd's "syncd listening" line: gRPC and Raft address.
var Listening = regexp.MustCompile(`msg="syncd listening".* grpc=(\S+) raft=(\S+)`)
