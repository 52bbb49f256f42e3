package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/shard"
)

// backUpNode writes a backup of a one-node cluster into path, leaving out
// the groups in skip.
func backUpNode(t *testing.T, n *Node, path string, skip ...shard.GroupID) backup.Manifest {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := n.ShardMap()
	w, err := backup.NewWriter(f, backup.Header{ClusterID: n.ClusterID(), Created: time.Now(), ShardMapVersion: m.Version})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids := []shard.GroupID{shard.MetaGroup}
	for _, g := range m.Groups {
		ids = append(ids, g.ID)
	}
	for _, id := range ids {
		if containsGroup(skip, id) {
			continue
		}
		name, meta := backup.MetaPartName, backup.PartMeta{Kind: backup.KindMeta}
		if id != shard.MetaGroup {
			g, _ := m.Group(id)
			name, meta = backup.GroupPartName(uint64(id)), backup.PartMeta{Kind: backup.KindGroup, GroupID: uint64(id), Ranges: backup.RangesOf(g.Ranges)}
		}
		var pw io.WriteCloser
		err := n.ExportGroup(ctx, id, writerFunc(func(p []byte) (int, error) { return pw.Write(p) }), func(applied uint64, digest string) (err error) {
			meta.AppliedIndex, meta.Digest = applied, digest
			pw, err = w.Part(name, meta)
			return err
		})
		if err == nil {
			err = pw.Close()
		}
		if err != nil {
			t.Fatalf("back up group %d: %v", id, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.Manifest()
}

func containsGroup(ids []shard.GroupID, id shard.GroupID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// damaged writes a copy of src changed by edit into a new file.
func damaged(t *testing.T, src string, edit func([]byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "damaged.backup")
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// holdsState reports what of a node's state a data dir holds.
func holdsState(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	for _, d := range []string{"meta", "groups", restoreMarker} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			found = append(found, d)
		}
	}
	return found
}

// TestRestoreRefusesDamagedBackups: a truncated backup, one with a flipped
// byte and one without a group are refused, naming the part (or the end
// the file lost), and a damaged file leaves the data dir without state.
// A good one restores, and the restored node's seqs go on.
func TestRestoreRefusesDamagedBackups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = true
	src := startReady(t, cfg)
	for i := range 20 {
		if _, err := src.Append(ctx, AppendRequest{Timeline: fmt.Sprintf("t%d", i%4), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.backup")
	man := backUpNode(t, src, good)
	target := src.ShardMap().GroupFor("t1")
	incomplete := filepath.Join(dir, "incomplete.backup")
	backUpNode(t, src, incomplete, target)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	part, _ := man.Part(backup.GroupPartName(uint64(target)))

	// A manifest listing a part the file lacks is the backup package's
	// (TestPartsMatchManifest); here a group the backup left out.
	cases := []struct {
		name string
		file string
		want []string // in the error
	}{
		{"truncated in the manifest", damaged(t, good, func(b []byte) []byte { return b[:len(b)-10] }), []string{"truncated"}},
		{"truncated in a part", damaged(t, good, func(b []byte) []byte { return b[:part.Offset+part.Length/2] }), []string{"truncated"}},
		{"a flipped byte in a part", damaged(t, good, func(b []byte) []byte { b[part.Offset+part.Length/2] ^= 0x40; return b }),
			[]string{fmt.Sprintf("%q", part.Name)}},
		{"a group of the shard map not backed up", incomplete, []string{fmt.Sprintf("%q", part.Name), "not in the backup"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcfg := testConfig(t, t.TempDir())
			rcfg.NodeID, rcfg.Bootstrap, rcfg.RestoreFrom = "r1", true, tc.file
			n, err := Start(rcfg)
			if err == nil {
				n.Close()
				t.Fatal("a damaged backup was restored")
			}
			if !errors.Is(err, ErrRestore) {
				t.Fatalf("error %v is not ErrRestore", err)
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error %q does not say %q", err, s)
				}
			}
			held := holdsState(t, rcfg.DataDir)
			if tc.file != incomplete && len(held) > 0 {
				t.Fatalf("a refused backup left %v in the data dir", held)
			}
			if tc.file == incomplete {
				// Found once the meta part is loaded: the marker stays, and
				// a start without the restore is refused.
				rcfg.RestoreFrom = ""
				if n, err := Start(rcfg); err == nil || !strings.Contains(err.Error(), restoreMarker) {
					if n != nil {
						n.Close()
					}
					t.Fatalf("a start on an unfinished restore: %v, want it refused naming %s", err, restoreMarker)
				}
			}
		})
	}

	t.Run("a good backup, restored twice over an unfinished one", func(t *testing.T) {
		rcfg := testConfig(t, t.TempDir())
		rcfg.NodeID, rcfg.Bootstrap, rcfg.RestoreFrom = "r1", true, incomplete
		if n, err := Start(rcfg); err == nil {
			n.Close()
			t.Fatal("the incomplete backup was restored")
		}
		rcfg.RestoreFrom = good
		n := startReady(t, rcfg)
		if got := len(n.Restored()); got != len(man.Parts) {
			t.Fatalf("%d groups restored, want %d", got, len(man.Parts))
		}
		res, err := n.Append(ctx, AppendRequest{Timeline: "t1", Payload: []byte("after")})
		if err != nil || res.Seq != 6 {
			t.Fatalf("append after the restore: seq %d, %v; want 6", res.Seq, err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		rcfg.RaftAddr, rcfg.GossipAddr = n.Config().RaftAddr, n.Config().GossipAddr
		// A restart does not restore again, and a restore into the dir
		// that now holds the state is refused.
		if n, err := Start(rcfg); err == nil || !errors.Is(err, ErrRestore) {
			if n != nil {
				n.Close()
			}
			t.Fatalf("a restore into a dir holding state: %v", err)
		}
		rcfg.RestoreFrom, rcfg.Bootstrap = "", false
		n = startReady(t, rcfg)
		defer n.Close()
		head, err := n.Head(ctx, "t1", Linearizable)
		if err != nil || head != 6 {
			t.Fatalf("head after a restart: %d, %v; want 6", head, err)
		}
	})
}
