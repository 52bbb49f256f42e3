package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/internal/testutil"
)

func openTest(tb testing.TB, dir string, bootID string) *Engine {
	tb.Helper()
	e, err := Open(Options{Dir: dir, InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler), BootID: bootID})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

func entry(index uint64, data string) *raft.Log {
	return &raft.Log{Index: index, Term: index/10 + 1, Type: raft.LogCommand, Data: []byte(data), Extensions: []byte("ext"), AppendedAt: time.Unix(1700000000, int64(index))}
}

func groupLog(tb testing.TB, e *Engine, id uint64) *Log {
	tb.Helper()
	l, err := e.Log(id)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func wantBounds(tb testing.TB, l *Log, first, last uint64) {
	tb.Helper()
	f, _ := l.FirstIndex()
	la, _ := l.LastIndex()
	if f != first || la != last {
		tb.Fatalf("group %d: bounds %d..%d, want %d..%d", l.id, f, la, first, last)
	}
}

// The log behaves as raft.LogStore asks, per group, across a reopen.
func TestLogStoreAndStable(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, dir, "boot")
	a, b := groupLog(t, e, 1), groupLog(t, e, 2)
	wantBounds(t, a, 0, 0)
	var batch []*raft.Log
	for i := uint64(1); i <= 30; i++ {
		batch = append(batch, entry(i, fmt.Sprint("a", i)))
	}
	if err := a.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := b.StoreLog(entry(5, "b5")); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, a, 1, 30)
	wantBounds(t, b, 5, 5)
	var got raft.Log
	if err := a.GetLog(17, &got); err != nil {
		t.Fatal(err)
	}
	want := entry(17, "a17")
	if got.Index != 17 || got.Term != want.Term || got.Type != want.Type || string(got.Data) != "a17" || string(got.Extensions) != "ext" || !got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("entry 17: %+v", got)
	}
	if err := b.GetLog(17, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("another group's index: %v", err)
	}
	// Compaction from the front, a conflicting suffix from the back.
	if err := a.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteRange(26, 30); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, a, 11, 25)
	if err := a.GetLog(10, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("deleted entry: %v", err)
	}

	if _, err := a.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing stable key: %v (raft compares the text with \"not found\")", err)
	}
	if err := a.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := a.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, dir, "boot")
	a, b = groupLog(t, e, 1), groupLog(t, e, 2)
	wantBounds(t, a, 11, 25)
	wantBounds(t, b, 5, 5)
	if v, err := a.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("term after reopen: %d %v", v, err)
	}
	if v, err := a.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("vote after reopen: %q %v", v, err)
	}
	if _, err := b.GetUint64([]byte("CurrentTerm")); err == nil {
		t.Fatal("a stable key leaked across groups")
	}
}

// damageWAL edits the stored record of entry index of l in its segment.
func damageWAL(t *testing.T, e *Engine, l *Log, index uint64, edit func(rec []byte)) {
	t.Helper()
	e.wal.mu.RLock()
	at, ok := e.wal.idx.at(l.id, index)
	seg := e.wal.segment(at.seg)
	e.wal.mu.RUnlock()
	if !ok || seg == nil {
		t.Fatalf("entry %d not found", index)
	}
	rec := make([]byte, at.n)
	if _, err := seg.f.ReadAt(rec, at.off); err != nil {
		t.Fatal(err)
	}
	edit(rec)
	if _, err := seg.f.WriteAt(rec, at.off); err != nil {
		t.Fatal(err)
	}
}

// A stored entry or stable value that was damaged is an error, never data.
func TestDamagedLogEntriesAreErrors(t *testing.T) {
	e := openTest(t, t.TempDir(), "boot")
	l := groupLog(t, e, 3)
	if err := l.SetUint64([]byte("CurrentTerm"), 4); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(rec []byte)
	}{
		{"a flipped data byte", func(rec []byte) { rec[len(rec)-4] ^= 1 }},
		{"a flipped term", func(rec []byte) { rec[walRecordHeader+20] ^= 0x10 }},
		{"a flipped group", func(rec []byte) { rec[walRecordHeader+3] ^= 1 }},
		{"a flipped length", func(rec []byte) { rec[2] ^= 1 }},
		{"a flipped checksum", func(rec []byte) { rec[5] ^= 1 }},
		{"zeroed", func(rec []byte) { clear(rec) }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := uint64(10 * (i + 1))
			if err := l.StoreLogs([]*raft.Log{entry(base, "one"), entry(base+1, "two")}); err != nil {
				t.Fatal(err)
			}
			damageWAL(t, e, l, base+1, tc.edit)
			var got raft.Log
			if err := l.GetLog(base+1, &got); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damaged entry read as %+v, %v", got, err)
			}
			if err := l.GetLog(base, &got); err != nil || string(got.Data) != "one" {
				t.Fatalf("intact neighbour: %+v %v", got, err)
			}
		})
	}
	t.Run("a stable value", func(t *testing.T) {
		err := e.stable.do(func(tx *bolt.Tx) error {
			b := tx.Bucket(l.stable)
			v := bytes.Clone(b.Get([]byte("CurrentTerm")))
			v[len(v)-1] ^= 1
			return b.Put([]byte("CurrentTerm"), v)
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := l.GetUint64([]byte("CurrentTerm")); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("damaged term read as %d, %v", v, err)
		}
	})
}

// Appends to many groups at once share commits, and so fsyncs: the point of
// the engine.
func TestAppendsOfManyGroupsShareCommits(t *testing.T) {
	e := openTest(t, t.TempDir(), "boot")
	const groups, perGroup = 16, 50
	logs := make([]*Log, groups)
	for i := range logs {
		logs[i] = groupLog(t, e, uint64(i+1))
	}
	before := e.commits[storeLog].Load()
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for _, l := range logs {
		wg.Go(func() {
			for i := uint64(1); i <= perGroup; i++ {
				if err := l.StoreLog(entry(i, "x")); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, l := range logs {
		wantBounds(t, l, 1, perGroup)
	}
	commits := e.commits[storeLog].Load() - before
	t.Logf("%d appends in %d commits", groups*perGroup, commits)
	if commits >= groups*perGroup {
		t.Fatalf("%d appends took %d commits: none shared", groups*perGroup, commits)
	}
	if got := e.Fsyncs()["log"]; got > e.commits[storeLog].Load()+3 {
		t.Fatalf("%d log fsyncs for %d commits, want one each (and the first segment's)", got, e.commits[storeLog].Load())
	}
}

// One caller's failure is its own: the others in its batch commit.
func TestCommitterIsolatesAFailingRequest(t *testing.T) {
	e := openTest(t, t.TempDir(), "boot")
	st, err := e.State(1)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	// Hold the committer so that the requests below queue into one batch.
	release := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once // fn runs again when a request of its batch fails
	go e.state.do(func(*bolt.Tx) error { once.Do(func() { close(held) }); <-release; return nil }, nil)
	<-held
	var wg sync.WaitGroup
	results := make([]error, 5)
	for i := range results {
		wg.Go(func() {
			results[i] = st.Update(func(root *bolt.Bucket) error {
				if err := root.Put(fmt.Append(nil, "k", i), []byte("v")); err != nil {
					return err
				}
				if i == 2 {
					return boom
				}
				return nil
			})
		})
	}
	// Wait until all five are queued behind the held one.
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(e.state.reqs); n < len(results) {
			return fmt.Errorf("%d of %d requests queued", n, len(results))
		}
		return nil
	})
	close(release)
	wg.Wait()
	for i, err := range results {
		if (i == 2) != errors.Is(err, boom) || (i != 2 && err != nil) {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err = st.View(func(root *bolt.Bucket) error {
		for i := range results {
			if got := root.Get(fmt.Append(nil, "k", i)) != nil; got != (i != 2) {
				return fmt.Errorf("key %d present %v", i, got)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
