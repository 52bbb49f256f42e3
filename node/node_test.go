package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T, dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.GRPCAddr = "n1", dir, "127.0.0.1:0", "127.0.0.1:1"
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func startReady(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if n.readyTerm.Load() == 0 {
			return errors.New("not a ready leader yet")
		}
		members, err := n.Members()
		if err != nil || len(members) == 0 || members[0].GRPCAddr == "" {
			return fmt.Errorf("not registered yet: %v %v", members, err)
		}
		return nil
	})
	return n
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no node id", func(c *Config) { c.NodeID = "" }, "node id is empty"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir is empty"},
		{"payload over the hard limit", func(c *Config) { c.MaxPayloadBytes = fsm.MaxPayloadBytes + 1 }, "max payload"},
		{"zero page size", func(c *Config) { c.MaxPageSize = 0 }, "max page size"},
		{"tiny dedupe window", func(c *Config) { c.DedupeWindow = time.Microsecond }, "dedupe window"},
		{"no clock", func(c *Config) { c.Clock = nil }, "clock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestRestartKeepsStateAndSeqsGoOn: a restarted node replays its log over
// the persisted state without applying anything twice, and seqs continue.
func TestRestartKeepsStateAndSeqsGoOn(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	cfg.SnapshotThreshold, cfg.TrailingLogs = 4, 2 // some of the log is compacted
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	n := startReady(t, cfg)
	for i := range 10 {
		if _, err := n.Append(ctx, AppendRequest{Timeline: "a", Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := n.Digest()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Bootstrap = false
	cfg.RaftAddr = n.Config().RaftAddr // same address: nothing to re-register
	n = startReady(t, cfg)
	defer n.Close()
	after, _ := n.Digest()
	if before != after {
		t.Fatal("state changed across a restart")
	}
	res, err := n.Append(ctx, AppendRequest{Timeline: "a", Payload: []byte("10")})
	if err != nil || res.Seq != 11 {
		t.Fatalf("append after restart: seq %d, %v; want 11", res.Seq, err)
	}
	page, err := n.Pull(ctx, "a", 0, 100, Linearizable)
	if err != nil || len(page.Entries) != 11 {
		t.Fatalf("pull after restart: %d entries, %v", len(page.Entries), err)
	}
	for i, e := range page.Entries {
		if e.Seq != uint64(i+1) || string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("entry %d: seq %d payload %q", i, e.Seq, e.Payload)
		}
	}
}

func TestWritesOnANonLeaderAreRefusedWithoutLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir()) // not bootstrapped: never leads
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	_, err = n.Append(context.Background(), AppendRequest{Timeline: "a"})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != "" {
		t.Fatalf("got %v, want a NotLeaderError with no leader", err)
	}
	if _, err := n.Head(context.Background(), "a", Linearizable); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("linearizable head: %v, want ErrNotLeader", err)
	}
	if head, err := n.Head(context.Background(), "a", Stale); err != nil || head != 0 {
		t.Fatalf("stale head: %d %v", head, err)
	}
}
