package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// fakeGroup is a group as fakeSource streams it: its header and size
// bytes of data, sent in chunks of chunk bytes.
type fakeGroup struct {
	applied uint64
	digest  string
	size    int64
	chunk   int
	// bad, if set, replaces the stream (a broken server).
	bad func(fn func(*syncv1.BackupChunk) error) error
}

// data is the group's bytes: a pattern that differs by group and offset.
func (g fakeGroup) data(id uint64) []byte {
	b := make([]byte, g.size)
	for i := range b {
		b[i] = byte(uint64(i)*7 + id*13 + uint64(i>>12))
	}
	return b
}

// fakeSource is a cluster for runBackup: maps are the shard maps it
// answers in turn (the last one repeats), moves likewise.
type fakeSource struct {
	maps    []*syncv1.ShardMapResponse
	moves   [][]*syncv1.MoveInfo
	groups  map[uint64]fakeGroup
	onChunk func(id uint64, sent int64) // after fn took each data chunk
	nMaps   int
	nMoves  int
}

func (f *fakeSource) ShardMap(context.Context) (*syncv1.ShardMapResponse, error) {
	m := f.maps[min(f.nMaps, len(f.maps)-1)]
	f.nMaps++
	return m, nil
}

func (f *fakeSource) Moves(context.Context) ([]*syncv1.MoveInfo, error) {
	if len(f.moves) == 0 {
		return nil, nil
	}
	m := f.moves[min(f.nMoves, len(f.moves)-1)]
	f.nMoves++
	return m, nil
}

func (f *fakeSource) ClusterID(context.Context) (string, error) { return "c-test", nil }

func (f *fakeSource) Group(_ context.Context, id uint64, fn func(*syncv1.BackupChunk) error) error {
	g, ok := f.groups[id]
	if !ok {
		return status.Errorf(codes.NotFound, "no group %d", id)
	}
	if g.bad != nil {
		return g.bad(fn)
	}
	if err := fn(&syncv1.BackupChunk{GroupId: id, AppliedIndex: g.applied, Digest: g.digest}); err != nil {
		return err
	}
	data := g.data(id)
	var sent int64
	for len(data) > 0 {
		n := min(len(data), g.chunk)
		if err := fn(&syncv1.BackupChunk{Data: data[:n]}); err != nil {
			return err
		}
		data, sent = data[n:], sent+int64(n)
		if f.onChunk != nil {
			f.onChunk(id, sent)
		}
	}
	return nil
}

func fakeMap(version uint64) *syncv1.ShardMapResponse {
	return &syncv1.ShardMapResponse{Version: version, Groups: []*syncv1.ShardGroupInfo{
		{Id: 2, Ranges: []*syncv1.SlotRange{{Start: 2048, End: 4096}}},
		{Id: 1, Ranges: []*syncv1.SlotRange{{Start: 0, End: 1000}, {Start: 1000, End: 2048}}},
	}}
}

func newFake() *fakeSource {
	return &fakeSource{
		maps: []*syncv1.ShardMapResponse{fakeMap(5)},
		groups: map[uint64]fakeGroup{
			0: {applied: 40, digest: "d0", size: 3000, chunk: 1000},
			1: {applied: 41, digest: "d1", size: 5<<20 + 17, chunk: 1 << 20},
			2: {applied: 42, digest: "d2", size: 1, chunk: 1 << 20},
		},
	}
}

func fixedClock() func() time.Time {
	t := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	return func() time.Time { t = t.Add(time.Second); return t }
}

// leftovers lists what a backup left in dir besides want.
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.Contains(strings.Join(want, "\x00"), e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestBackupStreamsEachChunkThrough: every chunk reaches the file before
// the next is asked for (the writer holds at most a frame, never a part),
// and the file holds each group's bytes with the header's index and
// digest, the map's ranges, in group order after the meta part.
func TestBackupStreamsEachChunkThrough(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b.ssb")
	f := newFake()
	var total int64
	checked := 0
	f.onChunk = func(id uint64, sent int64) {
		tmps, _ := filepath.Glob(filepath.Join(dir, ".b.ssb.tmp-*"))
		if len(tmps) != 1 {
			t.Errorf("temporary files %v", tmps)
			return
		}
		st, err := os.Stat(tmps[0])
		if err != nil {
			t.Error(err)
			return
		}
		if id == 1 && st.Size() < total+sent-backup.MaxFrame {
			t.Errorf("group 1: %d bytes sent, the file has %d: the writer holds more than a frame", sent, st.Size())
		}
		checked++
	}
	total = 3000 + 64 // roughly what precedes group 1's data; the check allows a frame of slack
	res, err := runBackup(context.Background(), f, backupOptions{out: out, now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 6 {
		t.Fatalf("only %d chunks checked", checked)
	}
	if res.Attempts != 1 || res.ClusterID != "c-test" || res.ShardMapVersion != 5 || res.Seconds <= 0 || res.Bytes == 0 {
		t.Fatalf("result %+v", res)
	}
	if st, err := os.Stat(out); err != nil || st.Size() != res.Bytes {
		t.Fatalf("%s: %v, %d bytes, result says %d", out, err, st.Size(), res.Bytes)
	}
	r, err := backup.OpenFile(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	m := r.Manifest()
	want := []struct {
		name   string
		id     uint64
		ranges []backup.SlotRange
	}{
		{backup.MetaPartName, 0, nil},
		{backup.GroupPartName(1), 1, []backup.SlotRange{{First: 0, Last: 999}, {First: 1000, Last: 2047}}},
		{backup.GroupPartName(2), 2, []backup.SlotRange{{First: 2048, Last: 4095}}},
	}
	if len(m.Parts) != len(want) {
		t.Fatalf("parts %+v", m.Parts)
	}
	for i, w := range want {
		p := m.Parts[i]
		g := f.groups[w.id]
		if p.Name != w.name || p.GroupID != w.id || p.AppliedIndex != g.applied || p.Digest != g.digest || fmt.Sprint(p.Ranges) != fmt.Sprint(w.ranges) {
			t.Errorf("part %d: %+v, want %+v", i, p, w)
		}
		pr, err := r.Part(p.Name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(pr)
		if err != nil || !bytes.Equal(got, g.data(w.id)) {
			t.Errorf("part %s: %d bytes, %v; not what the group sent", p.Name, len(got), err)
		}
	}
	if l := leftovers(t, dir, "b.ssb"); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}

// TestBackupRefusesAMoveInFlight: a move not cleaned or aborted refuses the
// backup as FailedPrecondition naming it and what to do, and writes
// nothing; a finished one does not.
func TestBackupRefusesAMoveInFlight(t *testing.T) {
	for _, tc := range []struct {
		phase   string
		refused bool
	}{
		{"planned", true}, {"fenced", true}, {"copied", true}, {"switched", true},
		{"cleaned", false}, {"aborted", false},
	} {
		t.Run(tc.phase, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "b")
			f := newFake()
			f.moves = [][]*syncv1.MoveInfo{{{Id: 7, Phase: tc.phase, SourceGroup: 1, TargetGroup: 2, Ranges: []*syncv1.SlotRange{{Start: 10, End: 20}}}}}
			_, err := runBackup(context.Background(), f, backupOptions{out: out})
			if !tc.refused {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "move 7 (slots 10-19, group 1 -> 2) is "+tc.phase) ||
				!strings.Contains(err.Error(), "abort") || exitStatus(err) != exitFailed {
				t.Fatalf("err %v", err)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
	}
}

// TestBackupMapMovedUnderIt: a map version or a move that changed between
// the start and the end starts the backup over once; twice fails, leaving
// nothing.
func TestBackupMapMovedUnderIt(t *testing.T) {
	cleaned := []*syncv1.MoveInfo{{Id: 3, Phase: "cleaned"}}
	for _, tc := range []struct {
		name     string
		maps     []uint64
		moves    [][]*syncv1.MoveInfo
		attempts int // 0: fails
	}{
		{"still", []uint64{5}, nil, 1},
		{"version changed once", []uint64{5, 6}, nil, 2},
		{"version changed twice", []uint64{5, 6, 7, 8}, nil, 0},
		{"a move came and went", []uint64{5}, [][]*syncv1.MoveInfo{nil, cleaned}, 2},
		{"a move started during it", []uint64{5}, [][]*syncv1.MoveInfo{nil, {{Id: 3, Phase: "planned"}}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "b")
			f := newFake()
			f.maps = nil
			for _, v := range tc.maps {
				f.maps = append(f.maps, fakeMap(v))
			}
			f.moves = tc.moves
			res, err := runBackup(context.Background(), f, backupOptions{out: out})
			if tc.attempts == 0 {
				if err == nil {
					t.Fatalf("backup written: %+v", res)
				}
				if l := leftovers(t, dir); len(l) > 0 {
					t.Fatalf("%v; left behind: %v", err, l)
				}
				return
			}
			if err != nil || res.Attempts != tc.attempts || (tc.attempts > 1) != strings.Contains(res.Retried, "moved under the backup") {
				t.Fatalf("%+v, %v", res, err)
			}
			if _, err := backup.Verify(out); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBackupRefusesBadStreams: a stream of another group or cluster, with
// no header, or with a second one fails the backup and leaves nothing.
func TestBackupRefusesBadStreams(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(fn func(*syncv1.BackupChunk) error) error
		want string
	}{
		{"another group", func(fn func(*syncv1.BackupChunk) error) error {
			return fn(&syncv1.BackupChunk{GroupId: 2, AppliedIndex: 1})
		}, "the stream is of group 2"},
		{"another cluster", func(fn func(*syncv1.BackupChunk) error) error {
			return fn(&syncv1.BackupChunk{GroupId: 1, AppliedIndex: 1, ClusterId: "other"})
		}, `cluster "other"`},
		{"no header", func(fn func(*syncv1.BackupChunk) error) error { return nil }, "ended before its header"},
		{"two headers", func(fn func(*syncv1.BackupChunk) error) error {
			if err := fn(&syncv1.BackupChunk{GroupId: 1, AppliedIndex: 1, Data: []byte("x")}); err != nil {
				return err
			}
			return fn(&syncv1.BackupChunk{AppliedIndex: 2})
		}, "a second header"},
		{"cut off", func(fn func(*syncv1.BackupChunk) error) error {
			if err := fn(&syncv1.BackupChunk{GroupId: 1, AppliedIndex: 1, Data: []byte("x")}); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "gone")
		}, "gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := newFake()
			g := f.groups[1]
			g.bad = tc.bad
			f.groups[1] = g
			_, err := runBackup(context.Background(), f, backupOptions{out: filepath.Join(dir, "b")})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `group 1 (part "group-1")`) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
	}
}

// TestBackupRefusesAnExistingOut: --out is kept unless --force, which
// replaces it.
func TestBackupRefusesAnExistingOut(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b")
	if err := os.WriteFile(out, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runBackup(context.Background(), newFake(), backupOptions{out: out})
	if b, _ := os.ReadFile(out); err == nil || !strings.Contains(err.Error(), "exists (give --force") || string(b) != "precious" {
		t.Fatalf("err %v, file %q", err, b)
	}
	if _, err := runBackup(context.Background(), newFake(), backupOptions{out: out, force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Verify(out); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, dir, "b"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	// Without --force the file is placed by a link, which refuses one
	// that appeared while the backup ran.
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := place(tmp, out, false); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("place over an existing file: %v", err)
	}
}

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
	if _, err := run(t, addr, "--timeout", "30s", "backup", "--out", file, "--force"); err != nil {
		t.Fatalf("backup --force: %v", err)
	}
	if _, err := run(t, addr, "backup"); err == nil || exitStatus(err) != exitUsage {
		t.Fatalf("backup without --out: %v", err)
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
	if l := leftovers(t, dir, "cluster.ssb"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
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
