package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

func openSmallSegments(tb testing.TB, dir string) *Engine {
	tb.Helper()
	e, err := Open(Options{Dir: dir, InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler), BootID: "boot", WALSegmentBytes: 16 << 10})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

// model is what a group's log must hold.
type model struct{ first, last uint64 }

func checkAgainst(t *testing.T, e *Engine, models map[uint64]*model) {
	t.Helper()
	for g, m := range models {
		l := groupLog(t, e, g)
		wantBounds(t, l, m.first, m.last)
		for i := m.first; i <= m.last && m.first != 0; i++ {
			var got raft.Log
			if err := l.GetLog(i, &got); err != nil {
				t.Fatalf("group %d entry %d: %v", g, i, err)
			}
			if want := fmt.Sprint(g, "/", i); string(got.Data) != want || got.Index != i {
				t.Fatalf("group %d entry %d holds %q", g, i, got.Data)
			}
		}
	}
}

// Random appends, compactions and suffix truncations on a busy group and a
// slow one, on small segments: the log always reads back as the model says,
// across reopens; old segments are deleted, and the slow group, which
// would hold the oldest segment alive, is rewritten.
func TestWALMatchesItsModelAcrossReopens(t *testing.T) {
	dir := t.TempDir()
	e := openSmallSegments(t, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	models := map[uint64]*model{1: {}, 2: {}}
	payload := func(g, i uint64) []byte { return []byte(fmt.Sprint(g, "/", i)) }
	maxSegs := 0
	for step := range 3000 {
		g := uint64(1)
		if rng.IntN(20) == 0 {
			g = 2 // slow: never compacts
		}
		m, l := models[g], groupLog(t, e, g)
		switch r := rng.IntN(10); {
		case r < 7:
			var batch []*raft.Log
			for range 1 + rng.IntN(4) {
				if m.first == 0 {
					m.first = m.last + 1
				}
				m.last++
				batch = append(batch, &raft.Log{Index: m.last, Term: 1, Type: raft.LogCommand, Data: append(payload(g, m.last), make([]byte, 200)...)[:len(payload(g, m.last))]})
			}
			if err := l.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
		case r < 9 && g == 1 && m.last > m.first+5:
			upTo := m.first + uint64(rng.IntN(int(m.last-m.first)))
			if err := l.DeleteRange(m.first, upTo); err != nil {
				t.Fatal(err)
			}
			m.first = upTo + 1
		case m.last > m.first+2 && m.first != 0:
			from := m.last - uint64(rng.IntN(2))
			if err := l.DeleteRange(from, m.last); err != nil {
				t.Fatal(err)
			}
			m.last = from - 1
		}
		e.wal.mu.RLock()
		maxSegs = max(maxSegs, len(e.wal.segs))
		e.wal.mu.RUnlock()
		if step%500 == 499 {
			checkAgainst(t, e, models)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			e = openSmallSegments(t, dir)
			checkAgainst(t, e, models)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, WALDir, "*.wal"))
	t.Logf("%d segments at the end, at most %d at once", len(files), maxSegs)
	if maxSegs > walRewriteAbove+2 {
		t.Fatalf("%d segments at once: the slow group was not rewritten", maxSegs)
	}
}

// A commit cut short by a crash (its record torn) was never acknowledged:
// Open drops it and everything before it is intact; appends go on after.
func TestWALTornTail(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, "boot")
	l := groupLog(t, e, 1)
	for i := uint64(1); i <= 5; i++ {
		if err := l.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte(fmt.Sprint(1, "/", i))}); err != nil {
			t.Fatal(err)
		}
	}
	damageWAL(t, e, l, 5, func(rec []byte) { clear(rec[len(rec)/2:]) }) // the last write, half landed
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, dir, "boot")
	checkAgainst(t, e, map[uint64]*model{1: {1, 4}})
	l = groupLog(t, e, 1)
	if err := l.StoreLog(&raft.Log{Index: 5, Term: 2, Data: []byte("1/5")}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, dir, "boot")
	checkAgainst(t, e, map[uint64]*model{1: {1, 5}})
}

// Damage before the last segment cannot be a torn write: the node refuses
// to start rather than lose what follows.
func TestWALDamageInAnEarlierSegmentRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	e := openSmallSegments(t, dir)
	l := groupLog(t, e, 1)
	for i := uint64(1); i <= 200; i++ {
		if err := l.StoreLog(&raft.Log{Index: i, Term: 1, Data: make([]byte, 300)}); err != nil {
			t.Fatal(err)
		}
	}
	e.wal.mu.RLock()
	segs := len(e.wal.segs)
	e.wal.mu.RUnlock()
	if segs < 2 {
		t.Fatalf("%d segments", segs)
	}
	damageWAL(t, e, l, 3, func(rec []byte) { rec[len(rec)-1] ^= 1 })
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir, Logger: slog.New(slog.DiscardHandler), BootID: "boot", WALSegmentBytes: 16 << 10})
	if !errors.Is(err, ErrWALDamaged) {
		t.Fatalf("open: %v, want ErrWALDamaged", err)
	}
	t.Log(err)
}

// Bytes past the end that once were records (a write that failed) never
// read as records: the chain of CRCs starts anew from the last good one.
func TestWALStaleBytesPastTheEndAreNotRecords(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, "boot")
	l := groupLog(t, e, 1)
	for i := uint64(1); i <= 3; i++ {
		if err := l.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte(fmt.Sprint(1, "/", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Copy record 3 past the end, as if a later write had landed and then
	// been forgotten.
	seg := e.wal.segs[len(e.wal.segs)-1]
	at, _ := e.wal.idx.at(1, 3)
	rec := make([]byte, at.n)
	if _, err := seg.f.ReadAt(rec, at.off); err != nil {
		t.Fatal(err)
	}
	if _, err := seg.f.WriteAt(rec, seg.size); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, dir, "boot")
	checkAgainst(t, e, map[uint64]*model{1: {1, 3}})
	b, err := os.ReadFile(seg.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b[e.wal.segs[len(e.wal.segs)-1].size:] {
		if c != 0 {
			t.Fatal("stale bytes past the end were not zeroed")
		}
	}
}
