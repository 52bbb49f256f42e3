package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/backup/take"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// TestBackupOfACluster: a backup of a three-node cluster holds the meta
// group and every group of the map, at indexes past 0 and with the
// digests Admin.Digests reports on every replica of the quiet cluster;
// it verifies OK; damaged copies are refused naming what is wrong (and
// the part, where the damage is in one); --out is kept without --force; a
// move in flight refuses a backup.
func TestBackupOfACluster(t *testing.T) {
	var hold atomic.Bool
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 3
		cfg.OnMoveChunk = func(uint64, bool, *fsmpb.MoveImportState) {
			if hold.Load() {
				select {
				case held <- struct{}{}:
				default:
				}
				<-release
			}
		}
	})
	t.Cleanup(func() { close(release) }) // before the cluster stops
	addr := strings.Join(c.Addrs(), ",")
	for i := range 30 {
		if _, err := run(t, addr, "append", fmt.Sprintf("tl-%d", i), fmt.Sprintf("entry %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitConverged(20 * time.Second)
	smap := c.Members[c.WaitLeader(10*time.Second)].Node.ShardMap()

	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.ssb")
	out, err := run(t, addr, "--timeout", "30s", "backup", "--out", file)
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d parts", len(smap.Groups)+1)) || !strings.Contains(out, "MB/s") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	digests := nodeDigests(t, c)

	out, err = run(t, addr, "--json", "backup", "verify", file)
	var v verifyResult
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || !v.OK || v.Manifest == nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	m := *v.Manifest
	wantParts := []string{backup.MetaPartName}
	for _, g := range smap.Groups {
		wantParts = append(wantParts, backup.GroupPartName(uint64(g.ID)))
	}
	var gotParts []string
	for _, p := range m.Parts {
		gotParts = append(gotParts, p.Name)
		if p.AppliedIndex == 0 || p.Length == 0 || p.Digest == "" {
			t.Errorf("part %+v", p)
		}
		if p.GroupID != 0 {
			g, _ := smap.Group(shard.GroupID(p.GroupID))
			if fmt.Sprint(p.Ranges) != fmt.Sprint(backup.RangesOf(g.Ranges)) {
				t.Errorf("part %s: ranges %v, the map's %v", p.Name, p.Ranges, g.Ranges)
			}
		}
		hosts := 0
		for nodeID, ds := range digests {
			if d, ok := ds[p.GroupID]; ok {
				hosts++
				if d != p.Digest {
					t.Errorf("part %s: digest %s, %s reports %s", p.Name, p.Digest, nodeID, d)
				}
			}
		}
		if hosts == 0 {
			t.Errorf("part %s: no node reports a digest", p.Name)
		}
	}
	if fmt.Sprint(gotParts) != fmt.Sprint(wantParts) || m.ShardMapVersion != smap.Version || m.ClusterID == "" ||
		m.ClusterID != c.Members[0].Node.ClusterID() {
		t.Fatalf("manifest %+v, want parts %v of map v%d", m, wantParts, smap.Version)
	}
	out, err = run(t, addr, "backup", "verify", file)
	if err != nil || !strings.HasSuffix(out, "OK\n") || !strings.Contains(out, "cluster "+m.ClusterID) || !strings.Contains(out, "group-1") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	damaged(t, addr, file, m)

	if _, err := run(t, addr, "backup", "--out", file); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("backup over an existing file: %v", err)
	}
	out, err = run(t, addr, "--json", "--timeout", "30s", "backup", "--out", file, "--force")
	var res take.Result
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.File != file || res.Bytes == 0 || res.Attempts != 1 ||
		len(res.Parts) != len(wantParts) || res.ClusterID != m.ClusterID || res.ShardMapVersion != smap.Version {
		t.Fatalf("--json backup --force: %+v %v\n%s", res, err, out)
	}
	if st, err := os.Stat(file); err != nil || st.Size() != res.Bytes {
		t.Fatalf("%s after --force: %v (%d bytes written)", file, err, res.Bytes)
	}
	if _, err := run(t, addr, "backup"); err == nil || exitStatus(err) != exitUsage {
		t.Fatalf("backup without --out: %v", err)
	}
	if _, err := run(t, addr, "backup", "--out", file, "--force", "--max-mb-per-s", "-1"); err == nil || exitStatus(err) != exitUsage {
		t.Fatalf("backup --max-mb-per-s -1: %v", err)
	}
	if out, err := run(t, addr, "--timeout", "30s", "backup", "--out", file, "--force", "--max-mb-per-s", "50"); err != nil {
		t.Fatalf("a paced backup: %v\n%s", err, out)
	}

	// A move held in its copy refuses a backup.
	hold.Store(true)
	slot := shard.SlotOf("tl-0")
	from := smap.GroupOf(slot)
	to := shard.GroupID(1)
	if from == to {
		to = 2
	}
	if out, err := run(t, addr, "slots", "move", fmt.Sprint(slot), "--to", fmt.Sprint(to), "--detach"); err != nil {
		t.Fatalf("slots move: %v\n%s", err, out)
	}
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the move never copied a chunk")
	}
	moving := filepath.Join(dir, "moving.ssb")
	_, err = run(t, addr, "backup", "--out", moving)
	if err == nil || !strings.Contains(describe(err), "FailedPrecondition: backup: move 1") || !strings.Contains(err.Error(), "abort") || exitStatus(err) != exitFailed {
		t.Fatalf("backup during a move: %v", err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 || ents[0].Name() != "cluster.ssb" {
		t.Fatalf("%s holds %v (%v), want only cluster.ssb", dir, ents, err)
	}
}

// nodeDigests is each node's Admin.Digests.
func nodeDigests(t *testing.T, c *testcluster.Cluster) map[string]map[uint64]string {
	t.Helper()
	out := map[string]map[uint64]string{}
	for _, m := range c.Members {
		cl, err := client.New([]string{m.GRPCAddr}, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var resp *syncv1.DigestsResponse
		err = cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
			resp, err = a.Digests(ctx, &syncv1.DigestsRequest{})
			return err
		})
		cancel()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[m.ID] = resp.GetDigests()
	}
	return out
}

// damaged: copies of file cut short, with a byte flipped in a part's data,
// and with a part taken out are each refused by backup verify, exit 1,
// saying what is wrong and, for damage in a part, which.
func damaged(t *testing.T, addr, file string, m backup.Manifest) {
	t.Helper()
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	target := m.Parts[1]
	type tc struct {
		name, part, problem string
		data                []byte
	}
	var cases []tc
	for _, cut := range []int{0, 5, len(orig) / 2, int(target.Offset) + 3, len(orig) - 48, len(orig) - 1} {
		cases = append(cases, tc{fmt.Sprintf("cut at %d of %d", cut, len(orig)), "", "truncated", orig[:cut]})
	}
	flipped := bytes.Clone(orig)
	// The part's begin record ('P', name length, name, CRC) and its first
	// frame's header ('D', length) come before its data.
	flipped[int(target.Offset)+3+len(target.Name)+4+5+2] ^= 0x10
	cases = append(cases, tc{"a flipped byte", target.Name, "checksum mismatch", flipped})
	cases = append(cases, tc{"a part taken out", target.Name, "missing", withoutPart(t, orig, m, 1)})
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "damaged.ssb")
		if err := os.WriteFile(path, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, addr, "backup", "verify", path)
		if err == nil || exitStatus(err) != exitFailed || !strings.Contains(err.Error(), c.problem) || strings.Contains(out, "OK") {
			t.Errorf("%s: %v, want %q refused\n%s", c.name, err, c.problem, out)
			continue
		}
		if c.part != "" && !strings.Contains(err.Error(), fmt.Sprintf("part %q", c.part)) {
			t.Errorf("%s: %v does not name part %q", c.name, err, c.part)
		}
		out, err = run(t, addr, "--json", "backup", "verify", path)
		var v verifyResult
		if err == nil || json.Unmarshal([]byte(out), &v) != nil || v.OK || v.DamagedPart != c.part || v.Problem != c.problem {
			t.Errorf("%s --json: %+v %v\n%s", c.name, v, err, out)
		}
	}
}

// withoutPart is file with part i's bytes taken out and the manifest (and
// its trailer) rewritten to match the rest, still listing part i: the
// file as a lost part would leave it.
func withoutPart(t *testing.T, file []byte, m backup.Manifest, i int) []byte {
	t.Helper()
	const trailerLen = 8 + sha256.Size + 8
	mlen := binary.BigEndian.Uint64(file[len(file)-trailerLen:])
	dataEnd := int64(len(file)) - trailerLen - int64(mlen)
	end := dataEnd
	if i+1 < len(m.Parts) {
		end = m.Parts[i+1].Offset
	}
	cut := end - m.Parts[i].Offset
	for j := i + 1; j < len(m.Parts); j++ {
		m.Parts[j].Offset -= cut
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	out = append(out, file[:m.Parts[i].Offset]...)
	out = append(out, file[end:dataEnd]...)
	out = append(out, raw...)
	out = binary.BigEndian.AppendUint64(out, uint64(len(raw)))
	sum := sha256.Sum256(raw)
	out = append(out, sum[:]...)
	out = append(out, file[len(file)-8:]...)
	if _, err := backup.Open(bytes.NewReader(out), int64(len(out))); err != nil {
		t.Fatalf("the rewritten file does not open: %v", err)
	}
	return out
}
