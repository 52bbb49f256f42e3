package storage

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrClosed is returned by every call on a closed engine.
var ErrClosed = errors.New("storage: closed")

// maxBatch bounds how many requests one commit carries, so one round's
// transaction (and the time its callers wait) stays bounded under any load.
const maxBatch = 4096

// request is one caller's part of a commit. fn may run more than once
// (when another request in its batch fails, the rest run again without
// it), so it must work from what tx holds, not from what an earlier run
// did. after runs on the committer goroutine once the commit succeeded,
// in commit order, so caches updated there never go backwards.
type request struct {
	fn    func(tx *bolt.Tx) error
	after func()
	err   error
	done  chan struct{}
}

// CommitInfo describes one commit, for metrics.
type CommitInfo struct {
	Store    string // "log" or "state"
	Requests int    // callers served by the commit
	Fsyncs   int    // fdatasync calls the commit made
}

// committer owns the write side of one bbolt file: every write goes
// through it, and it commits whatever is queued when it gets to it in one
// transaction. That is group commit with no timer: at low load a request
// commits at once; under load the requests that arrive during a commit
// share the next one, so commits (and, for a synced file, fsyncs) per
// second stay bounded by the disk rather than growing with the number of
// writers or groups.
type committer struct {
	db    *bolt.DB
	store string
	// fsyncsPerCommit: bbolt syncs twice per commit (data pages, then the
	// meta page that points at them); 0 for a NoSync file.
	fsyncsPerCommit int
	onCommit        func(CommitInfo)
	// beforeCommit runs before each commit (the state's dirty mark);
	// onTick runs between commits every tick (the state's checkpoints).
	beforeCommit func() error
	onTick       func()
	tick         time.Duration

	reqs    chan *request
	mu      sync.RWMutex // guards closed against sends to reqs
	closed  bool
	stopped chan struct{}
}

func newCommitter(db *bolt.DB, store string, fsyncsPerCommit int, onCommit func(CommitInfo)) *committer {
	return &committer{
		db:              db,
		store:           store,
		fsyncsPerCommit: fsyncsPerCommit,
		onCommit:        onCommit,
		reqs:            make(chan *request, maxBatch),
		stopped:         make(chan struct{}),
	}
}

func (c *committer) start() { go c.loop() }

// do runs fn in the next commit and waits for that commit.
func (c *committer) do(fn func(tx *bolt.Tx) error, after func()) error {
	r := &request{fn: fn, after: after, done: make(chan struct{})}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	c.reqs <- r
	c.mu.RUnlock()
	<-r.done
	return r.err
}

// close stops taking requests, commits what is queued and stops.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.reqs)
	}
	c.mu.Unlock()
	<-c.stopped
}

func (c *committer) loop() {
	defer close(c.stopped)
	var tick <-chan time.Time
	if c.tick > 0 {
		t := time.NewTicker(c.tick)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]*request, 0, maxBatch)
	for {
		select {
		case r, ok := <-c.reqs:
			if !ok {
				return
			}
			batch = append(batch[:0], r)
		case <-tick:
			if c.onTick != nil {
				c.onTick()
			}
			continue
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-c.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		c.commit(batch)
		clear(batch)
	}
}

// commit runs the batch in one transaction. A request whose fn fails is
// answered with its error and the transaction is rolled back and run again
// without it, so one caller's failure never reaches the others' data.
func (c *committer) commit(batch []*request) {
	pending := batch
	for len(pending) > 0 {
		if c.beforeCommit != nil {
			if err := c.beforeCommit(); err != nil {
				answer(pending, err)
				return
			}
		}
		tx, err := c.db.Begin(true)
		if err != nil {
			answer(pending, fmt.Errorf("storage: %s: begin: %w", c.store, err))
			return
		}
		failed := -1
		for i, r := range pending {
			if r.err = r.fn(tx); r.err != nil {
				failed = i
				break
			}
		}
		if failed >= 0 {
			_ = tx.Rollback()
			close(pending[failed].done)
			pending = append(pending[:failed:failed], pending[failed+1:]...)
			continue
		}
		if err := tx.Commit(); err != nil {
			answer(pending, fmt.Errorf("storage: %s: commit: %w", c.store, err))
			return
		}
		for _, r := range pending {
			if r.after != nil {
				r.after()
			}
		}
		if c.onCommit != nil {
			c.onCommit(CommitInfo{Store: c.store, Requests: len(pending), Fsyncs: c.fsyncsPerCommit})
		}
		answer(pending, nil)
		return
	}
}

func answer(reqs []*request, err error) {
	for _, r := range reqs {
		r.err = err
		close(r.done)
	}
}
