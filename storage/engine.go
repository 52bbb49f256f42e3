// Package storage is a node's storage engine, shared by all the Raft
// groups the node hosts: one write-ahead log of their entries, one small
// bbolt file of their Raft stable stores, and one bbolt file of their
// states. Each has a single writer that commits whatever is queued at
// once. The log is fdatasynced at every commit; the state is not, because
// the log is the durable record (DESIGN.md says why, what survives a crash
// or a power loss, and the figures that chose this shape).
package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/internal/boltcheck"
	"github.com/syncstore/syncstore/internal/durable"
)

// Defaults for Options.
const (
	DefaultInitialMmapSize = 256 << 20
	// DefaultCheckpointInterval is how often a state written since its last
	// checkpoint is fsynced and marked clean.
	DefaultCheckpointInterval = 10 * time.Second
	// DefaultStateLinger is how long a state transaction holding only
	// applies (which nobody waits for) stays open for more before it is
	// committed; reads, snapshots and Update commit it at once. Like etcd's
	// 100 ms backend batch: a commit rewrites every page its writes touched,
	// so fewer, larger commits cost less per write (8 groups, 64 clients:
	// 608 -> 487 server CPU-us per write against 2 ms, in one run).
	DefaultStateLinger = 100 * time.Millisecond
)

// File names inside Options.Dir.
const (
	WALDir     = "wal"
	StableFile = "stable.db"
	StateFile  = "state.db"
	// dirtyFile exists while the state file may hold writes not yet
	// fsynced; it names the boot they were made in.
	dirtyFile = "state.dirty"
)

// Options configure Open.
type Options struct {
	Dir    string
	Logger *slog.Logger
	// InitialMmapSize of the state file; DefaultInitialMmapSize when zero.
	// A snapshot's long read transaction blocks the writer only when the
	// file outgrows it.
	InitialMmapSize int
	// CheckpointInterval; DefaultCheckpointInterval when zero.
	CheckpointInterval time.Duration
	// StateLinger; DefaultStateLinger when zero.
	StateLinger time.Duration
	// WALSegmentBytes; DefaultWALSegmentBytes when zero.
	WALSegmentBytes int64
	// ReserveBytes is the free space below which CheckSpace refuses writes
	// (0: never).
	ReserveBytes uint64
	// OnCommit, if set, is called after every commit, on the committer's
	// goroutine: it must not block.
	OnCommit func(CommitInfo)
	// BootID overrides the machine's boot id (tests); see bootID.
	BootID string
}

// Engine is a node's storage engine. Its methods are safe for concurrent
// use.
type Engine struct {
	opts     Options
	wal      *wal
	stable   *committer
	state    *committer
	stableDB *bolt.DB
	stateDB  *bolt.DB
	closed   atomic.Bool

	// Set when Open found the state missing, untrusted or damaged and
	// started an empty one: every group rebuilds from its snapshots and log.
	rebuilt string
	// existed: the engine's files were there before this Open.
	existed bool

	dirty     bool // the state holds commits not yet fsynced (committer goroutine)
	lastClean time.Time

	space spaceWatch

	fsyncs  [3]atomic.Uint64 // by store: log, stable, state
	commits [3]atomic.Uint64
}

const (
	storeLog = iota
	storeStable
	storeState
)

var storeNames = [3]string{"log", "stable", "state"}

// Open opens (or creates) the engine's files in opts.Dir.
func Open(opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.InitialMmapSize == 0 {
		opts.InitialMmapSize = DefaultInitialMmapSize
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.StateLinger == 0 {
		opts.StateLinger = DefaultStateLinger
	}
	if opts.WALSegmentBytes == 0 {
		opts.WALSegmentBytes = DefaultWALSegmentBytes
	}
	if opts.BootID == "" {
		opts.BootID = bootID()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	e := &Engine{opts: opts}
	_, statErr := os.Stat(filepath.Join(opts.Dir, StableFile))
	e.existed = statErr == nil
	var err error
	if e.stableDB, err = openChecked(filepath.Join(opts.Dir, StableFile), 0, false); err != nil {
		return nil, fmt.Errorf("storage: the Raft stable store (terms and votes) cannot be opened, and it cannot be rebuilt from this node alone: %w", err)
	}
	e.wal, err = openWAL(filepath.Join(opts.Dir, WALDir), opts.WALSegmentBytes, opts.Logger, func(n int) { e.fsyncs[storeLog].Add(uint64(n)) }, func(ci CommitInfo) {
		e.commits[storeLog].Add(1)
		if opts.OnCommit != nil {
			opts.OnCommit(ci)
		}
	})
	if err != nil {
		e.stableDB.Close()
		return nil, fmt.Errorf("storage: the Raft log cannot be opened, and it cannot be rebuilt from this node alone: %w", err)
	}
	if e.stateDB, err = e.openState(); err != nil {
		e.wal.close()
		e.stableDB.Close()
		return nil, err
	}
	e.stable = newCommitter(e.stableDB, "stable", 2, e.observe(storeStable))
	e.state = newCommitter(e.stateDB, "state", 0, e.observe(storeState))
	e.state.beforeCommit = e.markDirty
	e.state.onTick = e.checkpointIfDue
	e.state.tick = opts.CheckpointInterval / 4
	e.state.linger = opts.StateLinger
	e.state.onStall = e.onStall
	e.startSpaceWatch()
	e.lastClean = time.Now()
	e.stable.start()
	e.state.start()
	return e, nil
}

// openState opens the state file, first setting aside one that cannot be
// trusted: written since its last checkpoint in an earlier boot (a power
// loss or OS crash may have torn it: bbolt without fsync orders nothing),
// refused by boltcheck, or refused by bbolt. An empty state takes its
// place; every group then restores its newest snapshot and replays its log.
func (e *Engine) openState() (*bolt.DB, error) {
	path := filepath.Join(e.opts.Dir, StateFile)
	reason := ""
	if b, err := os.ReadFile(filepath.Join(e.opts.Dir, dirtyFile)); err == nil {
		if string(b) != e.opts.BootID || e.opts.BootID == "" {
			reason = fmt.Sprintf("the machine restarted (boot %q, now %q) while the state held writes not yet fsynced", string(b), e.opts.BootID)
		} else {
			e.opts.Logger.Info("storage: the state was not closed cleanly in this boot; its writes are in the OS page cache, so it is intact and the logs replay what it lacks")
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("storage: read %s: %w", dirtyFile, err)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && e.existed && reason == "" {
		reason = "the state file is missing"
	}
	var db *bolt.DB
	if reason == "" || reason == "the state file is missing" {
		var err error
		db, err = openChecked(path, e.opts.InitialMmapSize, true)
		if err != nil {
			reason = err.Error()
		}
	}
	if reason == "" {
		return db, nil
	}
	if db != nil { // missing: nothing to set aside
		e.rebuilt = reason
		e.opts.Logger.Warn("storage: the state file is missing: starting empty; every group rebuilds from its newest snapshot and its log")
		return db, nil
	}
	aside := fmt.Sprintf("%s.untrusted-%d", path, time.Now().UnixNano())
	if err := os.Rename(path, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("storage: set the untrusted state aside: %w", err)
	}
	if err := os.Remove(filepath.Join(e.opts.Dir, dirtyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := durable.SyncDir(e.opts.Dir); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	e.rebuilt = reason
	e.opts.Logger.Warn("storage: the state cannot be trusted: set aside, starting empty; every group rebuilds from its newest snapshot and its log", "reason", reason, "set_aside", aside)
	db, err := openChecked(path, e.opts.InitialMmapSize, true)
	if err != nil {
		return nil, fmt.Errorf("storage: create a new state: %w", err)
	}
	return db, nil
}

// openChecked opens a bbolt file after boltcheck accepted it (bbolt panics
// on some damage instead of returning an error). noSync leaves fsyncs to
// the caller.
func openChecked(path string, mmap int, noSync bool) (*bolt.DB, error) {
	if f, err := os.Open(path); err == nil {
		st, serr := f.Stat()
		if serr == nil && st.Size() > 0 {
			err = boltcheck.File(f, boltcheck.Options{MaxBucketDepth: 3})
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s is damaged: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         5 * time.Second,
		InitialMmapSize: mmap,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
		NoSync:          noSync,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// Rebuilt says why Open set the state aside and started an empty one, or
// "" when it did not.
func (e *Engine) Rebuilt() string { return e.rebuilt }

// Close commits what is queued, checkpoints the state and closes both
// files.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.stopSpaceWatch()
	errs := []error{e.wal.close()}
	e.stable.close()
	e.state.close()
	if e.dirty {
		errs = append(errs, e.checkpoint())
	}
	errs = append(errs, e.stateDB.Close(), e.stableDB.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

func (e *Engine) observe(store int) func(CommitInfo) {
	return func(ci CommitInfo) {
		e.commits[store].Add(1)
		e.fsyncs[store].Add(uint64(ci.Fsyncs))
		if e.opts.OnCommit != nil {
			e.opts.OnCommit(ci)
		}
	}
}

// Fsyncs is how many fsyncs (fdatasync of a file or fsync of the
// directory) each store ("log", "stable", "state") has made.
func (e *Engine) Fsyncs() map[string]uint64 {
	out := map[string]uint64{}
	for i, name := range storeNames {
		out[name] = e.fsyncs[i].Load()
	}
	return out
}

// markDirty runs before each state commit: the first commit after a
// checkpoint first records, durably, that the file now holds writes not
// fsynced, and in which boot.
func (e *Engine) markDirty() error {
	if e.dirty {
		return nil
	}
	if err := durable.WriteFile(filepath.Join(e.opts.Dir, dirtyFile), []byte(e.opts.BootID)); err != nil {
		return fmt.Errorf("storage: mark the state dirty: %w", err)
	}
	e.fsyncs[storeState].Add(2) // the file and the directory
	e.dirty = true
	return nil
}

func (e *Engine) checkpointIfDue() {
	if e.dirty && time.Since(e.lastClean) >= e.opts.CheckpointInterval {
		if err := e.checkpoint(); err != nil {
			e.opts.Logger.Error("storage: state checkpoint failed; will retry", "err", err)
		}
	}
}

// checkpoint fsyncs the state file and then drops the dirty mark. It runs
// between commits (on the committer goroutine, or after it stopped).
func (e *Engine) checkpoint() error {
	if err := e.stateDB.Sync(); err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	if err := os.Remove(filepath.Join(e.opts.Dir, dirtyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := durable.SyncDir(e.opts.Dir); err != nil {
		return err
	}
	e.fsyncs[storeState].Add(2)
	e.dirty = false
	e.lastClean = time.Now()
	return nil
}

// bootID names this boot of the machine (Linux). A process that crashed
// leaves its writes in the page cache, where the next process reads them
// and the kernel writes them out; only a new boot can have lost them. Where
// it is unknown (""), every unclean stop counts as a new boot.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(b)
}
