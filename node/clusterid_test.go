package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testutil"
)

func TestNewClusterIDIsRandomAndValid(t *testing.T) {
	a, b := NewClusterID(), NewClusterID()
	if a == b || len(a) != 32 {
		t.Fatalf("ids %q and %q", a, b)
	}
	if err := fsm.ValidateClusterID(a); err != nil {
		t.Fatal(err)
	}
}

func TestWriteClusterIDIsSetOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fresh") // made by the first write
	steps := []struct {
		name    string
		id      string
		wantErr error // nil: accepted
		want    string
	}{
		{"malformed", "a b", fsm.ErrInvalidArgument, ""},
		{"first", "cluster-a", nil, "cluster-a"},
		{"same again", "cluster-a", nil, "cluster-a"},
		{"another", "cluster-b", ErrOtherCluster, "cluster-a"},
	}
	for _, s := range steps {
		err := WriteClusterID(dir, s.id)
		if (s.wantErr == nil) != (err == nil) || (s.wantErr != nil && !errors.Is(err, s.wantErr)) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.wantErr)
		}
		if got, err := ReadClusterID(dir); err != nil || got != s.want {
			t.Fatalf("%s: read %q, %v; want %q", s.name, got, err, s.want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, clusterIDFile), []byte("not/an id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadClusterID(dir); !errors.Is(err, fsm.ErrInvalidArgument) {
		t.Fatalf("a damaged file read as %v", err)
	}
}

func waitMetaClusterID(t *testing.T, n *Node, want string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		got, err := n.meta.fsm.ClusterID()
		if err != nil || got != want {
			return fmt.Errorf("meta group holds cluster id %q (%v), want %q", got, err, want)
		}
		return nil
	})
}

// A bootstrap makes an id, writes it to the data dir and the meta group,
// and a restart keeps it; a data dir given an id first (a restore)
// bootstraps with that one.
func TestBootstrapMakesAClusterIDThatSurvivesRestarts(t *testing.T) {
	tests := []struct {
		name   string
		preset string
	}{
		{"new cluster", ""},
		{"restored data dir", "restored-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.preset != "" {
				if err := WriteClusterID(dir, tt.preset); err != nil {
					t.Fatal(err)
				}
			}
			cfg := testConfig(t, dir)
			cfg.Bootstrap = true
			n := startReady(t, cfg)
			id := n.ClusterID()
			if err := fsm.ValidateClusterID(id); err != nil || (tt.preset != "" && id != tt.preset) {
				t.Fatalf("cluster id %q (%v), preset %q", id, err, tt.preset)
			}
			if onDisk, err := ReadClusterID(dir); err != nil || onDisk != id {
				t.Fatalf("data dir holds %q (%v), node says %q", onDisk, err, id)
			}
			waitMetaClusterID(t, n, id)
			if st, err := n.Status(); err != nil || st.ClusterID != id || n.mux.ClusterID() != id {
				t.Fatalf("status %q (%v), raft port %q, want %q", st.ClusterID, err, n.mux.ClusterID(), id)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			// Known at once, from the data dir: before the meta group replays.
			n, err := Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if n.ClusterID() != id || n.mux.ClusterID() != id {
				t.Fatalf("after a restart: cluster id %q, raft port %q, want %q", n.ClusterID(), n.mux.ClusterID(), id)
			}
			waitMetaClusterID(t, n, id)
		})
	}
}

// A restore whose meta state came with the old cluster's id: the node,
// lone voter of its meta group, replaces it by its data dir's new id.
func TestALoneVoterReplacesTheMetaGroupsOldClusterID(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	old := n.ClusterID()
	waitMetaClusterID(t, n, old)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, clusterIDFile)); err != nil {
		t.Fatal(err)
	}
	if err := WriteClusterID(dir, "restored-2"); err != nil {
		t.Fatal(err)
	}
	n = startReady(t, cfg)
	defer n.Close()
	waitMetaClusterID(t, n, "restored-2")
	if n.ClusterID() != "restored-2" {
		t.Fatalf("node says %q", n.ClusterID())
	}
}

// A node that lost its file (or a data dir written before cluster ids
// with a meta group that has one) learns the id from its meta group.
func TestANodeLearnsTheClusterIDFromItsMetaGroup(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	id := n.ClusterID()
	waitMetaClusterID(t, n, id)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, clusterIDFile)); err != nil {
		t.Fatal(err)
	}
	n = startReady(t, cfg)
	defer n.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		onDisk, err := ReadClusterID(dir)
		if n.ClusterID() != id || n.mux.ClusterID() != id || onDisk != id || err != nil {
			return fmt.Errorf("node %q, raft port %q, data dir %q (%v); want %q", n.ClusterID(), n.mux.ClusterID(), onDisk, err, id)
		}
		return nil
	})
}

// A cluster bootstrapped before cluster ids (its data dir has Raft state
// but no id) gets one from its meta leader, once every node gossips that
// it knows cluster ids, and every node records it.
func TestAClusterMadeBeforeClusterIDsGetsOne(t *testing.T) {
	dir := t.TempDir()
	metaDir := groupDir(dir, 0)
	if err := os.MkdirAll(metaDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// An empty bolt file: the data dir is not new, so no id is made at start.
	if err := os.WriteFile(filepath.Join(metaDir, "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	n := startReady(t, cfg)
	defer n.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		stored, err := n.meta.fsm.ClusterID()
		onDisk, _ := ReadClusterID(dir)
		if err != nil || stored == "" || n.ClusterID() != stored || onDisk != stored || n.mux.ClusterID() != stored {
			return fmt.Errorf("meta %q (%v), node %q, data dir %q, raft port %q", stored, err, n.ClusterID(), onDisk, n.mux.ClusterID())
		}
		return nil
	})
}
