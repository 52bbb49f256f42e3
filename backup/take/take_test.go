package take

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/rpc/syncv1"
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

// fakeSource is a cluster for Run: maps are the shard maps it
// answers in turn (the last one repeats), moves likewise.
type fakeSource struct {
	maps    []*syncv1.ShardMapResponse
	moves   [][]*syncv1.MoveInfo
	groups  map[uint64]fakeGroup
	onChunk func(id uint64, sent int64) // after fn took each data chunk
	log     []string                    // "stream ID" as each group's stream starts
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
	f.log = append(f.log, fmt.Sprint("stream ", id))
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
	res, err := Run(context.Background(), f, Options{Out: out, Now: fixedClock()})
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
			_, err := Run(context.Background(), f, Options{Out: out})
			if !tc.refused {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "move 7 (slots 10-19, group 1 -> 2) is "+tc.phase) ||
				!strings.Contains(err.Error(), "abort") {
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
			res, err := Run(context.Background(), f, Options{Out: out})
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
			_, err := Run(context.Background(), f, Options{Out: filepath.Join(dir, "b")})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `group 1 (part "group-1")`) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
	}
}

// TestBackupRefusesAnExistingOut: Out is kept unless Force, which
// replaces it.
func TestBackupRefusesAnExistingOut(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b")
	if err := os.WriteFile(out, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), newFake(), Options{Out: out})
	if b, _ := os.ReadFile(out); err == nil || !strings.Contains(err.Error(), "exists (give --force") || string(b) != "precious" {
		t.Fatalf("err %v, file %q", err, b)
	}
	if _, err := Run(context.Background(), newFake(), Options{Out: out, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Verify(out); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, dir, "b"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	// Without Force the file is placed by a link, which refuses one
	// that appeared while the backup ran.
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := place(tmp, out, false); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("place over an existing file: %v", err)
	}
}

// logProgress logs each call into the source's log, with the file's size
// (the one temporary file's) at each PartDone.
type logProgress struct {
	f   *fakeSource
	dir string
}

func (p logProgress) Start(n int)       { p.f.log = append(p.f.log, fmt.Sprint("start ", n)) }
func (p logProgress) Group(name string) { p.f.log = append(p.f.log, "group "+name) }
func (p logProgress) Bytes(int64)       {}
func (p logProgress) Finish()           { p.f.log = append(p.f.log, "finish") }
func (p logProgress) PartDone() {
	tmps, _ := filepath.Glob(filepath.Join(p.dir, ".b.tmp-*"))
	size := int64(-1)
	if len(tmps) == 1 {
		if st, err := os.Stat(tmps[0]); err == nil {
			size = st.Size()
		}
	}
	p.f.log = append(p.f.log, fmt.Sprint("done ", size))
}

// TestBackupProgressOrder: Progress hears of the parts in their order,
// the meta group first, then the groups by id, each PartDone once the part
// is in the file and before the next part's stream starts (what a caller
// acting between parts relies on); a retry starts over.
func TestBackupProgressOrder(t *testing.T) {
	// The meta part holds 3000 bytes, group 1 5 MiB and 17, group 2 one:
	// each PartDone sees the file grown past them (frames and header add
	// a little), the writer having flushed the part.
	attempt := []string{"start 3",
		"group meta", "stream 0", "done >3000",
		"group group-1", "stream 1", "done >5245897",
		"group group-2", "stream 2", "done >5245898",
		"finish"}
	for _, tc := range []struct {
		name string
		maps []uint64
		want []string
	}{
		{"one attempt", []uint64{5}, attempt},
		{"started over", []uint64{5, 6}, append(slices.Clone(attempt), attempt...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := newFake()
			f.maps = nil
			for _, v := range tc.maps {
				f.maps = append(f.maps, fakeMap(v))
			}
			if _, err := Run(context.Background(), f, Options{Out: filepath.Join(dir, "b"), Progress: logProgress{f: f, dir: dir}}); err != nil {
				t.Fatal(err)
			}
			if len(f.log) != len(tc.want) {
				t.Fatalf("calls %q, want %q", f.log, tc.want)
			}
			for i, w := range tc.want {
				got := f.log[i]
				if least, ok := strings.CutPrefix(w, "done >"); ok {
					var size, over int64
					fmt.Sscan(least, &over)
					if _, err := fmt.Sscanf(got, "done %d", &size); err != nil || size <= over {
						t.Fatalf("call %d: %q, want the file over %d bytes (calls %q)", i, got, over, f.log)
					}
					continue
				}
				if got != w {
					t.Fatalf("call %d: %q, want %q (calls %q)", i, got, w, f.log)
				}
			}
		})
	}
}
