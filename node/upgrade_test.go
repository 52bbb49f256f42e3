package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testutil"
)

// waitVersions waits until the meta group and every data group of n run
// at want.
func waitVersions(t *testing.T, n *Node, want uint32) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		cv, err := n.ClusterVersion()
		if err != nil || cv.Version != want || !cv.Stored {
			return fmt.Errorf("meta group at %+v (%v), want %d", cv, err, want)
		}
		for _, g := range n.Groups() {
			gv, err := g.fsm.ClusterVersion()
			if err != nil || gv.Version != want {
				return fmt.Errorf("group %d at %+v (%v), want %d", g.id, gv, err, want)
			}
		}
		return nil
	})
}

// preVersionDataDir makes dir look like a data dir of a cluster made
// before cluster versions: not new, so nothing is set at start.
func preVersionDataDir(t *testing.T, dir string) {
	t.Helper()
	metaDir := groupDir(dir, 0)
	if err := os.MkdirAll(metaDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(metaDir, "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rounds waits for k more reconcile rounds.
func rounds(t *testing.T, n *Node, k uint64) {
	t.Helper()
	target := n.ReconcileRounds() + k
	testutil.Eventually(t, 10*time.Second, func() error {
		if n.ReconcileRounds() < target {
			return errors.New("reconciling")
		}
		return nil
	})
}

func TestANewClusterRunsAtItsBinarysVersion(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	waitVersions(t, n, fsm.SupportedClusterVersion())
	st, err := n.Status()
	if err != nil || st.Active.Version != fsm.SupportedClusterVersion() || st.SupportedClusterVersion != fsm.SupportedClusterVersion() || st.BinaryVersion == "" {
		t.Fatalf("status %+v %q %d, %v", st.Active, st.BinaryVersion, st.SupportedClusterVersion, err)
	}
	if v, changed, err := n.FinalizeUpgrade(context.Background(), 0); err != nil || changed || v != fsm.SupportedClusterVersion() {
		t.Fatalf("finalize at the newest version: %d %v %v; want a no-op", v, changed, err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = startReady(t, cfg)
	defer n.Close()
	waitVersions(t, n, fsm.SupportedClusterVersion())
}

// A cluster made before cluster versions stays at the base version until
// a finalize, which raises the meta group and then every data group.
func TestAClusterMadeBeforeVersionsRunsAtTheBaseUntilFinalized(t *testing.T) {
	dir := t.TempDir()
	preVersionDataDir(t, dir)
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	rounds(t, n, 5)
	if cv, err := n.ClusterVersion(); err != nil || cv.Version != fsm.BaseClusterVersion || cv.Stored {
		t.Fatalf("a cluster made before versions runs at %+v, %v", cv, err)
	}
	v, changed, err := n.FinalizeUpgrade(context.Background(), 0)
	if err != nil || !changed || v != fsm.SupportedClusterVersion() {
		t.Fatalf("finalize: %d %v %v", v, changed, err)
	}
	waitVersions(t, n, fsm.SupportedClusterVersion())
}

// The gate, with this process a test build (one version more than the
// release): the probe is refused below its version, before anything is
// proposed, and works once finalized.
func TestANewCommandWaitsForFinalize(t *testing.T) {
	defer fsm.EnableUpgradeProbe()()
	dir := t.TempDir()
	preVersionDataDir(t, dir)
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	ctx := context.Background()
	before := n.meta.fsm.AppliedIndex()
	_, _, err := n.UpgradeProbe(ctx, "k1", "early")
	if !errors.Is(err, fsm.ErrClusterVersion) || !strings.Contains(err.Error(), "syncctl upgrade finalize") {
		t.Fatalf("a probe at the base version: %v, want ErrClusterVersion naming the finalize", err)
	}
	for _, g := range n.Groups() {
		if gv, _ := g.fsm.ClusterVersion(); gv.Stored {
			t.Fatalf("group %d was given version %+v before any finalize", g.id, gv)
		}
	}
	if n.meta.fsm.AppliedIndex() != before {
		t.Fatal("a refused probe changed the meta group")
	}
	if _, _, err := n.FinalizeUpgrade(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// At once: the group's leader raises the group first if the
	// reconciler has not yet.
	probes, _, err := n.UpgradeProbe(ctx, "k1", "after")
	if err != nil || probes != 1 {
		t.Fatalf("a probe after finalize: %d, %v", probes, err)
	}
	waitVersions(t, n, fsm.SupportedClusterVersion())
}

func TestFinalizeWaitsForEveryNode(t *testing.T) {
	defer fsm.EnableUpgradeProbe()()
	answers := map[string]Status{"127.0.0.1:2": {ID: "n2", SupportedClusterVersion: 2}, "127.0.0.1:3": {ID: "n3", SupportedClusterVersion: 3}}
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	cfg.StatusFetcher = func(ctx context.Context, addr string) (Status, error) {
		if st, ok := answers[addr]; ok {
			return st, nil
		}
		return Status{}, errors.New("connection refused")
	}
	n := startReady(t, cfg)
	defer n.Close()
	ctx := context.Background()
	waitVersions(t, n, 3) // a test build bootstraps at its own version
	// Finalizing to a version above the binary's is refused.
	if _, _, err := n.FinalizeUpgrade(ctx, 4); !errors.Is(err, ErrUpgradeBlocked) {
		t.Fatalf("finalize above the binary: %v", err)
	}
	// A second cluster, made before versions, with three more nodes.
	dir := t.TempDir()
	preVersionDataDir(t, dir)
	cfg2 := cfg
	cfg2.DataDir = dir
	m := startReady(t, cfg2)
	defer m.Close()
	for i, addr := range []string{"127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"} {
		nd := fsm.Node{ID: fmt.Sprintf("n%d", i+2), RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7002+i), GRPCAddr: addr}
		if err := m.register(ctx, nd); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := m.FinalizeUpgrade(ctx, 3)
	if !errors.Is(err, ErrUpgradeBlocked) {
		t.Fatalf("finalize with nodes behind: %v", err)
	}
	for _, want := range []string{"n2 supports 2", "n4 did not answer"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("finalize refusal %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "n3") || strings.Contains(err.Error(), "n1") {
		t.Fatalf("finalize refusal %q names a node that is not behind", err)
	}
	if cv, _ := m.ClusterVersion(); cv.Stored {
		t.Fatalf("a refused finalize set %+v", cv)
	}
	// Version 2 is what every node supports.
	if v, changed, err := m.FinalizeUpgrade(ctx, 2); err == nil || v != 0 || changed {
		t.Fatalf("n4 does not answer, yet finalize to 2: %d %v %v", v, changed, err)
	}
	answers["127.0.0.1:4"] = Status{ID: "n4", SupportedClusterVersion: 2}
	if v, changed, err := m.FinalizeUpgrade(ctx, 2); err != nil || v != 2 || !changed {
		t.Fatalf("finalize to 2: %d %v %v", v, changed, err)
	}
}

// A binary behind the active version: running, it stops (Outdated); at
// start, it refuses, saying which versions.
func TestABinaryTooOldStopsAndRefusesToStart(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	waitVersions(t, n, fsm.SupportedClusterVersion())
	newer := fsm.SupportedClusterVersion() + 1
	// What a finalize by newer binaries looks like to this one.
	if _, err := n.meta.propose(context.Background(), &fsmpb.Command{Op: &fsmpb.Command_SetClusterVersion{SetClusterVersion: &fsmpb.SetClusterVersion{
		Version: newer, Expected: fsm.SupportedClusterVersion()}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Outdated():
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not see that it is outdated")
	}
	if err := n.OutdatedErr(); !errors.Is(err, ErrBinaryTooOld) {
		t.Fatalf("outdated: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Start(cfg)
	want := fmt.Sprintf("supports cluster version %d; the cluster's active version is %d (finalized ", fsm.SupportedClusterVersion(), newer)
	if !errors.Is(err, ErrBinaryTooOld) || !strings.Contains(err.Error(), want) {
		t.Fatalf("start of a binary too old: %v; want ErrBinaryTooOld saying %q", err, want)
	}
}

func TestCheckJoinVersion(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	waitVersions(t, n, fsm.SupportedClusterVersion())
	cases := []struct {
		supported uint32
		ok        bool
	}{
		{0, false}, // a binary older than cluster versions
		{fsm.BaseClusterVersion, false},
		{fsm.SupportedClusterVersion(), true},
		{fsm.SupportedClusterVersion() + 1, true},
	}
	for _, c := range cases {
		err := n.CheckJoinVersion("n9", c.supported)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBinaryTooOld)) {
			t.Errorf("a joiner supporting %d: %v", c.supported, err)
		}
	}
}
