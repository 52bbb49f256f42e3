package inproc

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/storage"
)

// memberLogs keeps each member's log, to check what a node said.
type memberLogs struct {
	mu   sync.Mutex
	logs map[string]*bytes.Buffer
}

func (l *memberLogs) writer(id string) io.Writer {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.logs[id] == nil {
		l.logs[id] = &bytes.Buffer{}
	}
	return writerFunc(func(p []byte) (int, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.logs[id].Write(p)
	})
}

func (l *memberLogs) of(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.logs[id].String()
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func statePath(m *testcluster.Member) string {
	return filepath.Join(m.Dir, "storage", storage.StateFile)
}

// TestFollowerStateRecovery stops a follower while writes go on, damages
// its state file the ways a disk or an operator can, and restarts it: the
// node rebuilds its state from its snapshots and log, or replays its log,
// says so in its log, and ends with every group's digest equal to its
// peers', every acknowledged append present once.
func TestFollowerStateRecovery(t *testing.T) {
	cases := []struct {
		name string
		// damage edits the stopped follower's state; stale is a copy of it
		// taken while it was stopped earlier in the run.
		damage func(t *testing.T, path string, stale []byte)
		said   string
	}{
		{"an older consistent copy (what losing unsynced writes leaves)", func(t *testing.T, path string, stale []byte) {
			if err := os.WriteFile(path, stale, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "behind"},
		{"deleted", func(t *testing.T, path string, _ []byte) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "the state file is missing"},
		{"truncated", func(t *testing.T, path string, _ []byte) {
			// Past the meta pages, into the tree (bbolt's free space after
			// the data would not be missed).
			if err := os.Truncate(path, 3*int64(os.Getpagesize())); err != nil {
				t.Fatal(err)
			}
		}, "cannot be trusted"},
		{"bytes flipped in page headers", func(t *testing.T, path string, _ []byte) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// The id and flags at the start of pages 2 to 40: the tree's
			// first pages (bbolt panicked on start on such a file).
			page := int64(os.Getpagesize())
			for p := int64(2); p <= 40; p++ {
				if _, err := f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x5a, 0x5a}, p*page); err != nil {
					t.Fatal(err)
				}
			}
		}, "cannot be trusted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &memberLogs{logs: map[string]*bytes.Buffer{}}
			t.Cleanup(func() {
				if t.Failed() {
					for _, id := range []string{"n1", "n2", "n3"} {
						path := filepath.Join(os.TempDir(), "recovery-"+strings.ReplaceAll(t.Name(), "/", "_")+"-"+id+".log")
						if err := os.WriteFile(path, []byte(logs.of(id)), 0o644); err != nil {
							t.Logf("keep %s's log: %v", id, err)
						}
					}
				}
			})
			c := testcluster.New(t, 3, func(cfg *node.Config) {
				cfg.Shards = 1
				cfg.SnapshotThreshold = 64
				cfg.TrailingLogs = 32
				cfg.SnapshotInterval = 200 * time.Millisecond
				cfg.Logger = slog.New(slog.NewTextHandler(logs.writer(cfg.NodeID), nil))
			})
			cl := c.Client()
			names := numbered("tl-%02d", 20)
			w := startWorkload(t, cl, "recovery", 8, names, time.Second)
			w.progress(t, 200)

			f := follower(t, c)
			c.Stop(f)
			stale, err := os.ReadFile(statePath(c.Members[f]))
			if err != nil {
				t.Fatal(err)
			}
			c.Restart(f)
			w.progress(t, 400) // the copy falls behind, past a few snapshots
			c.Stop(f)
			tc.damage(t, statePath(c.Members[f]), stale)
			c.Restart(f)
			w.progress(t, 200)
			w.finish()
			// Every member hosts the group again before the states are
			// compared (WaitConverged compares the members that host it).
			testutil.Eventually(t, 20*time.Second, func() error {
				for _, m := range c.Members {
					if m.Node.ShardMap() == nil || m.Node.Group(1) == nil {
						return fmt.Errorf("%s has not opened group 1 yet", m.ID)
					}
				}
				return nil
			})
			c.WaitConverged(30 * time.Second)
			checkHistory(t, c, names, w.acks, w.attempted)
			if said := logs.of(c.Members[f].ID); !strings.Contains(said, tc.said) {
				t.Fatalf("%s's log does not say %q:\n%s", c.Members[f].ID, tc.said, tail(said, 30))
			}
		})
	}
}

// follower is a member that leads neither the meta group nor group 1.
func follower(t *testing.T, c *testcluster.Cluster) int {
	t.Helper()
	meta := c.WaitLeader(10 * time.Second)
	data := c.WaitGroupLeader(1, 10*time.Second)
	for i := range c.Members {
		if i != meta && i != data {
			return i
		}
	}
	t.Fatal("no member follows both groups")
	return -1
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}
