package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/internal/testutil"
)

func put(tb testing.TB, st *State, k, v string) {
	tb.Helper()
	if err := st.Update(func(root *bolt.Bucket) error { return root.Put([]byte(k), []byte(v)) }); err != nil {
		tb.Fatal(err)
	}
}

func get(tb testing.TB, st *State, k string) string {
	tb.Helper()
	var v string
	if err := st.View(func(root *bolt.Bucket) error { v = string(root.Get([]byte(k))); return nil }); err != nil {
		tb.Fatal(err)
	}
	return v
}

func state(tb testing.TB, e *Engine, id uint64) *State {
	tb.Helper()
	st, err := e.State(id)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// A staged replacement is invisible until Install, which swaps it in whole;
// Abort and a failed check leave the state as it was.
func TestStagingInstallsWholeOrNothing(t *testing.T) {
	e := openTest(t, t.TempDir(), "boot")
	a, b := state(t, e, 1), state(t, e, 2)
	put(t, a, "old", "1")
	put(t, b, "other group", "kept")

	st, err := a.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"new1", "new2"} {
		if err := st.Update(func(root *bolt.Bucket) error { return root.Put([]byte(k), []byte("v")) }); err != nil {
			t.Fatal(err)
		}
	}
	if get(t, a, "new1") != "" || get(t, a, "old") != "1" {
		t.Fatal("staged data visible before Install")
	}
	refused := errors.New("refused")
	if err := st.Install(func(*bolt.Bucket) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("install with a failing check: %v", err)
	}
	if get(t, a, "old") != "1" || get(t, a, "new1") != "" {
		t.Fatal("a refused install changed the state")
	}
	if err := st.Install(func(*bolt.Bucket) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if get(t, a, "old") != "" || get(t, a, "new1") != "v" || get(t, a, "new2") != "v" {
		t.Fatal("install did not replace the state")
	}
	if get(t, b, "other group") != "kept" {
		t.Fatal("install touched another group")
	}

	st, err = a.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(root *bolt.Bucket) error { return root.Put([]byte("x"), []byte("y")) }); err != nil {
		t.Fatal(err)
	}
	if err := st.Abort(); err != nil {
		t.Fatal(err)
	}
	if get(t, a, "x") != "" || get(t, a, "new1") != "v" {
		t.Fatal("abort changed the state")
	}
	err = e.stateDB.View(func(tx *bolt.Tx) error {
		if stagingRoot(tx, a.name) != nil {
			return errors.New("staging root left behind")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dirtyThenKill leaves dir as a process killed after writing would: the
// state written without a checkpoint, its dirty mark naming boot.
func dirtyThenKill(t *testing.T, dir, boot string) {
	t.Helper()
	e := openTest(t, dir, boot)
	put(t, state(t, e, 1), "k", "written")
	mark, err := os.ReadFile(filepath.Join(dir, dirtyFile))
	if err != nil || string(mark) != boot {
		t.Fatalf("dirty mark %q, %v; want %q", mark, err, boot)
	}
	// Closing checkpoints and drops the mark; put it back as a kill would
	// have left it (the file's contents are what the page cache held).
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, dirtyFile), []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDirtyStateIsTrustedOnlyInItsBoot(t *testing.T) {
	t.Run("same boot: a process crash, the page cache holds the writes", func(t *testing.T) {
		dir := t.TempDir()
		dirtyThenKill(t, dir, "boot-1")
		e := openTest(t, dir, "boot-1")
		if e.Rebuilt() != "" {
			t.Fatalf("rebuilt: %s", e.Rebuilt())
		}
		if got := get(t, state(t, e, 1), "k"); got != "written" {
			t.Fatalf("state %q", got)
		}
	})
	t.Run("new boot: unsynced writes may be torn, the state is set aside", func(t *testing.T) {
		dir := t.TempDir()
		dirtyThenKill(t, dir, "boot-1")
		e := openTest(t, dir, "boot-2")
		if !strings.Contains(e.Rebuilt(), "restarted") {
			t.Fatalf("rebuilt: %q", e.Rebuilt())
		}
		if got := get(t, state(t, e, 1), "k"); got != "" {
			t.Fatalf("an untrusted state was kept: %q", got)
		}
		aside, _ := filepath.Glob(filepath.Join(dir, StateFile+".untrusted-*"))
		if len(aside) != 1 {
			t.Fatalf("set aside: %v", aside)
		}
	})
	t.Run("a clean close is trusted in any boot", func(t *testing.T) {
		dir := t.TempDir()
		e := openTest(t, dir, "boot-1")
		put(t, state(t, e, 1), "k", "written")
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, dirtyFile)); !os.IsNotExist(err) {
			t.Fatalf("dirty mark after a clean close: %v", err)
		}
		e = openTest(t, dir, "boot-2")
		if e.Rebuilt() != "" || get(t, state(t, e, 1), "k") != "written" {
			t.Fatalf("rebuilt %q after a clean close", e.Rebuilt())
		}
	})
}

// damageFile flips bytes of a closed bbolt file at off (meta page 0 and 1
// when off is 0 and pageSize).
func damageFile(t *testing.T, path string, offs ...int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range offs {
		b := make([]byte, 8)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		for i := range b {
			b[i] ^= 0xa5
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDamagedFiles(t *testing.T) {
	t.Run("a damaged state is set aside, not a crash", func(t *testing.T) {
		dir := t.TempDir()
		e := openTest(t, dir, "boot")
		put(t, state(t, e, 1), "k", "v")
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		page := int64(os.Getpagesize())
		damageFile(t, filepath.Join(dir, StateFile), 16, page+16, 2*page+8, 3*page+8)
		e = openTest(t, dir, "boot")
		if !strings.Contains(e.Rebuilt(), "damaged") {
			t.Fatalf("rebuilt: %q", e.Rebuilt())
		}
		put(t, state(t, e, 1), "k2", "v2") // usable
	})
	t.Run("a damaged stable store refuses to open, saying why", func(t *testing.T) {
		dir := t.TempDir()
		e := openTest(t, dir, "boot")
		groupLog(t, e, 1).SetUint64([]byte("CurrentTerm"), 3)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		page := int64(os.Getpagesize())
		damageFile(t, filepath.Join(dir, StableFile), 16, page+16)
		_, err := Open(Options{Dir: dir, Logger: slog.New(slog.DiscardHandler), BootID: "boot"})
		if err == nil || !strings.Contains(err.Error(), "stable store") {
			t.Fatalf("open of a damaged stable store: %v", err)
		}
	})
}

// Under steady applies the state's transaction is nearly always open; the
// checkpoint (fsync, dirty mark dropped) must still come, or a power loss
// would rebuild every group however long the node ran.
func TestCheckpointUnderSteadyLoad(t *testing.T) {
	e, err := Open(Options{Dir: t.TempDir(), InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler),
		BootID: "boot-1", CheckpointInterval: 40 * time.Millisecond, StateLinger: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := state(t, e, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 { // several appliers: a request is always queued
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.Apply(func(root *bolt.Bucket) (any, error) {
					return nil, root.Put(fmt.Appendf(nil, "k%d-%d", w, i%100), []byte("v"))
				}, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer wg.Wait()
	defer close(stop)
	// Each checkpoint is 2 fsyncs and the first commit after it marks the
	// state dirty again with 2 more: 22 means the first mark and five
	// checkpoints, each due 40 ms after the last and taken at the next
	// commit, so well within the deadline; a checkpoint left to a tick
	// that happens to find no transaction open comes about once a second.
	testutil.Eventually(t, 3*time.Second, func() error {
		if n := e.Fsyncs()[storeNames[storeState]]; n < 22 {
			return fmt.Errorf("fewer than 5 checkpoints under steady applies: %d state fsyncs", n)
		}
		return nil
	})
}
