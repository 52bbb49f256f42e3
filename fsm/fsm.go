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
	"sync/atomic"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/storage"
)

// Options configure Open.
type Options struct {
	// State is the group's part of the node's storage engine.
	State  *storage.State
	Logger *slog.Logger
	// OnApply, if set, is called after each applied batch committed, on the
	// apply goroutine: it must not block (push notifications, outbox wake).
	OnApply func(Changes)
	// OnRestore, if set, is called after a snapshot replaced the state.
	OnRestore func()
	// OnCorrupt, if set, is called (once, on the apply goroutine; it must
	// not block) when applying met a damaged stored value: from then on the
	// state machine applies nothing and answers ErrFenced.
	OnCorrupt func(error)
}

// FSM is the state machine of one Raft group. It implements
// raft.BatchingFSM. Reads may run concurrently with Apply.
type FSM struct {
	opts   Options
	log    *slog.Logger
	st     *storage.State
	closed atomic.Bool
	// fenced: applying met a damaged value; nothing is applied any more.
	fenced atomic.Bool

	applied atomic.Uint64 // last log index applied (commands and configuration)
	digests digestPoints
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Open opens the group's state, creating its schema if it is new.
func Open(opts Options) (*FSM, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &FSM{opts: opts, log: opts.Logger, st: opts.State}
	if err := f.loadApplied(true); err != nil {
		return nil, err
	}
	return f, nil
}

// loadApplied reads the applied index from the state, first creating the
// schema if create.
func (f *FSM) loadApplied(create bool) error {
	var applied uint64
	read := func(root *bolt.Bucket) error {
		if create {
			if err := createSchema(root); err != nil {
				return err
			}
		}
		applied = readU64(root.Bucket(bucketMeta), keyAppliedIndex)
		return nil
	}
	var err error
	if create {
		err = f.st.Update(read)
	} else {
		err = f.st.View(read)
	}
	if err != nil {
		return fmt.Errorf("fsm: group %d: init state: %w", f.st.Group(), err)
	}
	f.applied.Store(applied)
	return nil
}

// Close marks the state machine closed; the engine owns the files.
func (f *FSM) Close() error {
	f.closed.Store(true)
	f.digests.hashes.Wait()
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

// ApplyBatch applies committed log entries in one transaction, together
// with the new applied index, so a crash leaves either all of them or none
// and a replay skips what was already applied. The engine commits it with
// other groups' batches, after ApplyBatch returned and without fsync: the
// Raft log is the durable record, replayed from the state's applied index
// after a crash, and reads flush what they need to see. Watchers are told
// of the changes once they are committed. A storage failure panics: a
// replica that cannot apply a committed entry must stop rather than
// diverge.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	if f.closed.Load() {
		panic("fsm: apply on a closed state machine")
	}
	if f.fenced.Load() {
		return fencedResults(logs)
	}
	out := make([]interface{}, 0, len(logs))
	for len(logs) > 0 {
		o, err := f.applyUpToDigestPoint(logs)
		if errors.Is(err, ErrCorruptState) {
			return append(out, f.fenceOn(err, logs)...)
		}
		if err != nil {
			panic(fmt.Sprintf("fsm: cannot apply committed entries: %v", err))
		}
		f.applied.Store(o.last)
		out = append(out, o.results...)
		logs = logs[len(o.results):]
		if o.digestPoint {
			f.takeDigest(o.last)
		}
	}
	return out
}

// applyUpToDigestPoint applies logs in one transaction, stopping after a
// DigestPoint if there is one.
func (f *FSM) applyUpToDigestPoint(logs []*raft.Log) (*batchOutcome, error) {
	res, err := f.st.Apply(func(root *bolt.Bucket) (any, error) {
		return applyBatch(root, logs) // may run again: builds its outcome afresh
	}, func(res any) {
		if ch := res.(*batchOutcome).changes; f.opts.OnApply != nil && (len(ch.Heads) > 0 || ch.Outbox || ch.Copies || len(ch.Collections) > 0) {
			f.opts.OnApply(ch)
		}
	})
	if err != nil {
		return nil, err
	}
	return res.(*batchOutcome), nil
}

// fenceOn fences the replica for damage met while applying logs: applying
// on top of a damaged value would diverge, and stopping the process would
// stop it again at every restart. The replica serves nothing until the
// node rebuilds it from a healthy one.
func (f *FSM) fenceOn(err error, logs []*raft.Log) []interface{} {
	f.fenced.Store(true)
	f.log.Error("fsm: a stored value is damaged: this replica is fenced and applies nothing more", "err", err)
	if f.opts.OnCorrupt != nil {
		f.opts.OnCorrupt(err)
	}
	return fencedResults(logs)
}

// Fenced reports whether applying met a damaged value.
func (f *FSM) Fenced() bool { return f.fenced.Load() }

// fencedResults answers every command of a batch a fenced replica does not
// apply: the entries are committed (a quorum holds them) but this replica
// cannot say what they did.
func fencedResults(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = &Result{Op: "fenced", Err: ErrFenced}
		}
	}
	return out
}

// batchOutcome is what applying (a prefix of) a batch gave: a result per
// log entry applied (nil for entries skipped or not commands), the changes
// for watchers, the new applied index, and whether the prefix ends with a
// DigestPoint.
type batchOutcome struct {
	results     []interface{}
	changes     Changes
	last        uint64
	digestPoint bool
}

func applyBatch(root *bolt.Bucket, logs []*raft.Log) (*batchOutcome, error) {
	o := &batchOutcome{results: make([]interface{}, 0, len(logs))}
	meta := root.Bucket(bucketMeta)
	applied := readU64(meta, keyAppliedIndex)
	o.last = applied
	tracker, err := beginTracking(root)
	if err != nil {
		return nil, err
	}
	defer tracker.end()
	var lastTerm uint64
	for _, l := range logs {
		if l.Index <= applied {
			o.results = append(o.results, nil) // applied before a restart: never twice
			continue
		}
		o.last, lastTerm = l.Index, l.Term
		if l.Type != raft.LogCommand {
			o.results = append(o.results, nil)
			continue
		}
		res, err := applyCommand(root, &o.changes, l.Data)
		if err != nil {
			return nil, fmt.Errorf("log index %d: %w", l.Index, err)
		}
		o.results = append(o.results, res)
		if res.Op == opDigestPoint {
			o.digestPoint = true
			break
		}
	}
	if o.last == applied {
		return o, nil
	}
	if err := meta.Put(keyAppliedIndex, u64(o.last)); err != nil {
		return nil, err
	}
	return o, meta.Put(keyAppliedTerm, u64(lastTerm))
}

// view runs fn in a read transaction on the group's state.
func (f *FSM) view(fn func(root *bolt.Bucket) error) error {
	if f.closed.Load() {
		return ErrClosed
	}
	return f.st.View(fn)
}
