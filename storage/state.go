package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// State is one group's part of the node's state file: a bucket of its own
// (named by the group id) that the group's state machine treats as its
// root. Writes go through the engine's committer, batched with every other
// group's, and are not fsynced (the Raft log is the durable record; see
// DESIGN.md); reads run concurrently with them.
type State struct {
	e    *Engine
	id   uint64
	name []byte
	// pending: an Apply for this group ran in a transaction not yet
	// committed, so a read must flush first to see it.
	pending atomic.Bool
}

// stagingBucket holds snapshots being restored, one child per group, until
// Install moves a complete one into place.
var stagingBucket = []byte("restoring")

func groupBucketName(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte("g"), id) }

// State returns group id's state, creating its bucket if need be.
func (e *Engine) State(id uint64) (*State, error) {
	s := &State{e: e, id: id, name: groupBucketName(id)}
	err := e.state.do(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(s.name)
		return err
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: group %d state: %w", id, err)
	}
	return s, nil
}

// Group is the group id.
func (s *State) Group() uint64 { return s.id }

// Apply runs fn on the group's root bucket and returns its result as soon
// as it ran, before the transaction is committed: the state is not the
// durable record (the Raft log is), and a transaction of many applies
// from many groups commits as one. Reads of this group flush first, so
// they see it; after (if set) gets the result on the committer goroutine
// once it is committed and must not block. fn may run more than once (see
// request) and must derive everything from the bucket; only the first
// run's result is returned. An error means fn's writes were dropped.
func (s *State) Apply(fn func(root *bolt.Bucket) (any, error), after func(result any)) (any, error) {
	return s.e.state.submit(&request{
		fn: func(tx *bolt.Tx) (any, error) {
			root := tx.Bucket(s.name)
			if root == nil {
				return nil, fmt.Errorf("storage: group %d has no state bucket", s.id)
			}
			return fn(root)
		},
		after:    after,
		deferred: true,
		st:       s,
	})
}

// flushIfPending commits the open transaction if it holds an Apply of this
// group.
func (s *State) flushIfPending() error {
	if s.pending.Load() {
		return s.e.state.flush()
	}
	return nil
}

// Update runs fn on the group's root bucket in the next commit. fn may run
// more than once (see request); it must derive everything from the bucket.
// A returned error means nothing fn did was committed.
func (s *State) Update(fn func(root *bolt.Bucket) error) error {
	return s.e.state.do(func(tx *bolt.Tx) error {
		root := tx.Bucket(s.name)
		if root == nil {
			return fmt.Errorf("storage: group %d has no state bucket", s.id)
		}
		return fn(root)
	}, nil)
}

// View runs fn on the group's root bucket in a read transaction.
func (s *State) View(fn func(root *bolt.Bucket) error) error {
	if s.e.closed.Load() {
		return ErrClosed
	}
	if err := s.flushIfPending(); err != nil {
		return err
	}
	return s.e.stateDB.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(s.name)
		if root == nil {
			return fmt.Errorf("storage: group %d has no state bucket", s.id)
		}
		return fn(root)
	})
}

// ReadTx is a read transaction on the group's root bucket that the caller
// ends with Release (a snapshot streams one while writes go on).
type ReadTx struct {
	tx   *bolt.Tx
	Root *bolt.Bucket
}

// Release ends the read transaction.
func (r *ReadTx) Release() { _ = r.tx.Rollback() }

// BeginRead opens a read transaction on the group's root bucket.
func (s *State) BeginRead() (*ReadTx, error) {
	if s.e.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.flushIfPending(); err != nil {
		return nil, err
	}
	tx, err := s.e.stateDB.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("storage: begin read: %w", err)
	}
	root := tx.Bucket(s.name)
	if root == nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("storage: group %d has no state bucket", s.id)
	}
	return &ReadTx{tx: tx, Root: root}, nil
}

// Staging is a replacement for the group's state being built in parts
// (a snapshot restored in bounded transactions), invisible to readers
// until Install swaps it in whole.
type Staging struct{ s *State }

// NewStaging starts an empty staging root for the group, dropping any left
// from an interrupted restore.
func (s *State) NewStaging() (*Staging, error) {
	err := s.e.state.do(func(tx *bolt.Tx) error {
		parent, err := tx.CreateBucketIfNotExists(stagingBucket)
		if err != nil {
			return err
		}
		if parent.Bucket(s.name) != nil {
			if err := parent.DeleteBucket(s.name); err != nil {
				return err
			}
		}
		_, err = parent.CreateBucket(s.name)
		return err
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: group %d: start staging: %w", s.id, err)
	}
	return &Staging{s: s}, nil
}

// Update runs fn on the staging root in the next commit (same rules as
// State.Update).
func (st *Staging) Update(fn func(root *bolt.Bucket) error) error {
	return st.s.e.state.do(func(tx *bolt.Tx) error {
		root := stagingRoot(tx, st.s.name)
		if root == nil {
			return errors.New("storage: staging root is gone")
		}
		return fn(root)
	}, nil)
}

func stagingRoot(tx *bolt.Tx, name []byte) *bolt.Bucket {
	if parent := tx.Bucket(stagingBucket); parent != nil {
		return parent.Bucket(name)
	}
	return nil
}

// Install checks the staging root with check and, if it passes, makes it
// the group's state in one transaction: readers see the old state or the
// new one, never a mix.
func (st *Staging) Install(check func(root *bolt.Bucket) error) error {
	name := st.s.name
	return st.s.e.state.do(func(tx *bolt.Tx) error {
		staged := stagingRoot(tx, name)
		if staged == nil {
			return errors.New("storage: staging root is gone")
		}
		if err := check(staged); err != nil {
			return err
		}
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.MoveBucket(name, tx.Bucket(stagingBucket), nil)
	}, nil)
}

// Abort drops the staging root.
func (st *Staging) Abort() error {
	return st.s.e.state.do(func(tx *bolt.Tx) error {
		if parent := tx.Bucket(stagingBucket); parent != nil && parent.Bucket(st.s.name) != nil {
			return parent.DeleteBucket(st.s.name)
		}
		return nil
	}, nil)
}

// Drop empties the group's state (a replica about to be rebuilt from a
// healthy one).
func (s *State) Drop() error {
	err := s.e.state.do(func(tx *bolt.Tx) error {
		if tx.Bucket(s.name) != nil {
			if err := tx.DeleteBucket(s.name); err != nil {
				return err
			}
		}
		_, err := tx.CreateBucket(s.name)
		return err
	}, nil)
	if err != nil {
		return fmt.Errorf("storage: group %d: drop state: %w", s.id, err)
	}
	return nil
}
