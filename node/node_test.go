package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T, dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.GRPCAddr, cfg.GossipAddr = "n1", dir, "127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:0"
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Shards = 2
	cfg.ReconcileInterval = 50 * time.Millisecond
	return cfg
}

func startReady(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !n.meta.isReadyLeader() {
			return errors.New("not a ready meta leader yet")
		}
		members, err := n.Members()
		if err != nil || len(members) == 0 || members[0].GRPCAddr == "" {
			return fmt.Errorf("not registered yet: %v %v", members, err)
		}
		m := n.ShardMap()
		if m == nil {
			return errors.New("no shard map yet")
		}
		for _, sg := range m.Groups {
			g := n.Group(sg.ID)
			if g == nil || !g.isReadyLeader() {
				return fmt.Errorf("group %d not led here yet", sg.ID)
			}
			if _, _, ok, _ := g.OwnedRanges(); !ok {
				return fmt.Errorf("group %d not told its ranges yet", sg.ID)
			}
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
	before, _ := n.States()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Bootstrap = false
	cfg.RaftAddr, cfg.GossipAddr = n.Config().RaftAddr, n.Config().GossipAddr // same addresses: nothing to re-register
	n = startReady(t, cfg)
	defer n.Close()
	after, _ := n.States()
	if !maps.Equal(before, after) {
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

func TestANodeWithoutClusterRefusesRequests(t *testing.T) {
	cfg := testConfig(t, t.TempDir()) // not bootstrapped: no meta leader, no map
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.Append(context.Background(), AppendRequest{Timeline: "a"}); !errors.Is(err, ErrNoShardMap) {
		t.Fatalf("got %v, want ErrNoShardMap", err)
	}
	if _, err := n.Head(context.Background(), "a", Stale); !errors.Is(err, ErrNoShardMap) {
		t.Fatalf("head on a node that never saw a shard map: %v, want ErrNoShardMap", err)
	}
}

func TestMetricsCountProposalsAndExposeRaftState(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	reg := prometheus.NewRegistry()
	if err := n.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Append(context.Background(), AppendRequest{Timeline: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Append(context.Background(), AppendRequest{Timeline: ""}); err == nil {
		t.Fatal("an empty timeline was accepted")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "," + l.GetName() + "=" + l.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				got[name] = float64(h.GetSampleCount())
			} else if c := m.GetCounter(); c != nil {
				got[name] = c.GetValue()
			} else {
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"syncstore_propose_seconds,op=append,outcome=ok": 1,
		"syncstore_meta_is_leader":                       1,
		"syncstore_groups_led":                           2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	// Every store's fsyncs are counted: a node that bootstrapped has synced
	// its meta log, the data groups' logs and stable stores.
	for _, store := range []string{"log", "stable", "meta"} {
		if got["syncstore_storage_fsyncs_total,store="+store] == 0 {
			t.Errorf("no fsyncs counted for store %s (all: %v)", store, got)
		}
	}
	if _, ok := got["syncstore_storage_fsyncs_total,store=state"]; !ok {
		t.Error("no fsync counter for the state")
	}
	if got["syncstore_meta_commit_index"] < 3 || got["syncstore_shard_map_version"] < 1 {
		t.Errorf("meta commit index %v, map version %v", got["syncstore_meta_commit_index"], got["syncstore_shard_map_version"])
	}
}

// TestAReplicaStaysUntilRemovedFromItsGroup: when the map moves a group off
// this node, the replica keeps running while it is still in the group's
// configuration — here, as the group's only voter, until its new replicas
// could take over (the "ghost" node never registers, so never).
func TestAReplicaStaysUntilRemovedFromItsGroup(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := n.ShardMap()
	groups := slices.Clone(m.Groups)
	groups[0].Replicas = []string{"ghost"}
	moved, err := shard.New(m.Version+1, groups)
	if err != nil {
		t.Fatal(err)
	}
	n.proposeMap(ctx, m.Version, moved)
	testutil.Eventually(t, 5*time.Second, func() error {
		if v := n.ShardMap().Version; v != moved.Version {
			return fmt.Errorf("map v%d, want v%d", v, moved.Version)
		}
		return nil
	})
	// Several reconcile rounds later the replica is still up and leading.
	start := n.rounds.Load()
	testutil.Eventually(t, 5*time.Second, func() error {
		if done := n.rounds.Load() - start; done < 5 {
			return fmt.Errorf("%d reconcile rounds so far", done)
		}
		return nil
	})
	g := n.Group(groups[0].ID)
	if g == nil || !g.IsLeader() {
		t.Fatal("the group's only replica was closed before anyone could take over")
	}
	if _, err := n.Append(ctx, AppendRequest{Timeline: timelineIn(moved, groups[0].ID)}); err != nil {
		t.Fatalf("the group stopped taking appends: %v", err)
	}
}

func timelineIn(m *shard.Map, g shard.GroupID) string {
	for i := 0; ; i++ {
		if tl := fmt.Sprint("t-", i); m.GroupFor(tl) == g {
			return tl
		}
	}
}

// TestLimitZeroIsTheDefaultPage: a read with limit 0 (proto3's unset
// field) gets DefaultPageSize entries, capped by the node's max page size;
// a limit past that is refused.
func TestLimitZeroIsTheDefaultPage(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := startReady(t, cfg)
	defer n.Close()
	for i := range DefaultPageSize + 1 {
		if _, err := n.Write(ctx, WriteRequest{Collection: "c", Ops: []RecordOp{{Key: fmt.Sprintf("k%03d", i), Value: []byte("v")}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range DefaultPageSize + 1 {
		if _, err := n.Append(ctx, AppendRequest{Timeline: "a", Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	pull, err := n.Pull(ctx, "a", 0, 0, Linearizable)
	if err != nil || len(pull.Entries) != DefaultPageSize {
		t.Fatalf("pull with limit 0: %d entries, %v; want %d", len(pull.Entries), err, DefaultPageSize)
	}
	hist, err := n.History(ctx, "a", 0, 0, Linearizable)
	if err != nil || len(hist.Entries) != DefaultPageSize {
		t.Fatalf("history with limit 0: %d entries, %v; want %d", len(hist.Entries), err, DefaultPageSize)
	}
	sync, err := n.SyncRecords(ctx, "c", 0, 0, Linearizable)
	if err != nil || len(sync.Changes) != DefaultPageSize {
		t.Fatalf("sync with limit 0: %d changes, %v; want %d", len(sync.Changes), err, DefaultPageSize)
	}
	if _, err := n.Pull(ctx, "a", 0, cfg.MaxPageSize+1, Linearizable); !errors.Is(err, fsm.ErrInvalidArgument) {
		t.Fatalf("pull past the max page size: %v", err)
	}
}
