// Package fsm is syncstore's replicated state machine: timelines, their
// sequence counters and the node registry, kept in bbolt.
//
// The raft adapter (Apply, ApplyBatch, Snapshot, Restore) only decodes log
// entries and hands them to the dispatcher in apply.go, which tests call
// directly. Apply is deterministic: it reads no clock and no randomness; the
// proposer's time travels inside the command.
package fsm

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// DefaultInitialMmapSize lets a snapshot's long read transaction run without
// blocking the writer when the file grows (bbolt remaps only past this size).
const DefaultInitialMmapSize = 256 << 20

// Options configure Open.
type Options struct {
	// Path is the bbolt file holding the state.
	Path string
	// InitialMmapSize; DefaultInitialMmapSize when zero.
	InitialMmapSize int
	Logger          *slog.Logger
	// OnApply, if set, is called after each applied batch committed, on the
	// apply goroutine: it must not block (push notifications, outbox wake).
	OnApply func(Changes)
	// OnRestore, if set, is called after a snapshot replaced the state.
	OnRestore func()
}

// FSM is the state machine of one Raft group. It implements
// raft.BatchingFSM. Reads may run concurrently with Apply.
type FSM struct {
	opts Options
	log  *slog.Logger

	// mu guards the db handle: Restore swaps it under the write lock, every
	// other use holds the read lock.
	mu sync.RWMutex
	db *bolt.DB

	applied atomic.Uint64 // last log index applied (commands and configuration)
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Open opens (or creates) the state at opts.Path.
func Open(opts Options) (*FSM, error) {
	if opts.InitialMmapSize == 0 {
		opts.InitialMmapSize = DefaultInitialMmapSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &FSM{opts: opts, log: opts.Logger}
	db, err := f.openDB(opts.Path)
	if err != nil {
		return nil, err
	}
	f.db = db
	return f, nil
}

func (f *FSM) openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         5 * time.Second,
		InitialMmapSize: f.opts.InitialMmapSize,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: open %s: %w", path, err)
	}
	var applied uint64
	err = db.Update(func(tx *bolt.Tx) error {
		if err := createSchema(tx); err != nil {
			return err
		}
		applied = readU64(tx.Bucket(bucketMeta), keyAppliedIndex)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("fsm: init %s: %w", path, err)
	}
	f.applied.Store(applied)
	return db, nil
}

// Close closes the state. The FSM must not be used afterwards.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	if err != nil {
		return fmt.Errorf("fsm: close: %w", err)
	}
	return nil
}

// AppliedIndex is the index of the last command or configuration entry
// applied. Raft hands no-op and barrier entries to no state machine, so it
// can trail Raft's own applied index.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply applies one log entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in one bbolt transaction, together
// with the new applied index, so a crash leaves either all of them or none
// and a replay skips what was already applied. A storage failure panics: a
// replica that cannot apply a committed entry must stop rather than diverge.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		panic("fsm: apply on a closed state machine")
	}
	var last uint64
	var ch Changes
	err := f.db.Update(func(tx *bolt.Tx) error {
		ch = Changes{} // a retried transaction starts over
		meta := tx.Bucket(bucketMeta)
		applied := readU64(meta, keyAppliedIndex)
		last = applied
		var lastTerm uint64
		for i, l := range logs {
			if l.Index <= applied {
				continue // applied before a restart: never twice
			}
			if l.Type == raft.LogCommand {
				res, err := applyCommand(tx, &ch, l.Data)
				if err != nil {
					return fmt.Errorf("log index %d: %w", l.Index, err)
				}
				out[i] = res
			}
			last, lastTerm = l.Index, l.Term
		}
		if last == applied {
			return nil
		}
		if err := meta.Put(keyAppliedIndex, u64(last)); err != nil {
			return err
		}
		return meta.Put(keyAppliedTerm, u64(lastTerm))
	})
	if err != nil {
		panic(fmt.Sprintf("fsm: cannot apply committed entries: %v", err))
	}
	f.applied.Store(last)
	if f.opts.OnApply != nil && (len(ch.Heads) > 0 || ch.Outbox) {
		f.opts.OnApply(ch)
	}
	return out
}

// view runs fn in a read transaction on the current database.
func (f *FSM) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.View(fn)
}

// syncDir fsyncs a directory so a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
