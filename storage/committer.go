package storage

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrClosed is returned by every call on a closed engine.
var ErrClosed = errors.New("storage: closed")

// maxBatch bounds how many requests one commit carries, so one round's
// transaction (and the time its callers wait) stays bounded under any load.
const maxBatch = 4096

// request is one caller's part of a commit. fn may run more than once: when
// another request in its transaction fails, the transaction is rolled back
// and the others run again without it, so fn must work from what tx holds
// and be deterministic; only its first run's result is kept. after runs on
// the committer goroutine once the commit succeeded, in commit order, so
// caches updated there never go backwards.
type request struct {
	fn    func(tx *bolt.Tx) (any, error)
	after func(result any)
	// deferred: answered as soon as fn ran, before the commit (state
	// applies: the log is their durable record); otherwise answered after
	// the commit that carries it.
	deferred bool
	// flush: no fn; answered once everything before it is committed.
	flush bool
	// st is the group state a deferred apply wrote to: marked pending
	// until the commit.
	st *State

	result any
	err    error
	done   chan struct{}
}

// CommitInfo describes one commit, for metrics.
type CommitInfo struct {
	Store    string // "log" or "state"
	Requests int    // callers served by the commit
	Fsyncs   int    // fdatasync calls the commit made
}

// committer owns the write side of one bbolt file: every write goes through
// it. It runs requests as they come into one open transaction and commits
// it when a caller waits for the commit (then everything queued behind it
// shares it: group commit, no timer), when a deferred transaction has
// lingered long enough, or when it is full. So commits (and, for a synced
// file, fsyncs) per second stay bounded by the disk, not by the number of
// writers or groups.
type committer struct {
	db    *bolt.DB
	store string
	// fsyncsPerCommit: bbolt syncs twice per commit (data pages, then the
	// meta page that points at them); 0 for a NoSync file.
	fsyncsPerCommit int
	onCommit        func(CommitInfo)
	// linger is how long a transaction holding only deferred requests stays
	// open for more: nobody waits for it, and a bigger commit costs less
	// per request.
	linger time.Duration
	// beforeCommit runs before each commit (the state's dirty mark);
	// onTick runs between transactions every tick (the state's
	// checkpoints).
	beforeCommit func() error
	onTick       func()
	tick         time.Duration
	// onStall reports a commit that keeps failing for want of space (nil
	// when it recovered).
	onStall func(error)

	reqs    chan *request
	mu      sync.RWMutex // guards closed against sends to reqs
	closed  bool
	stopped chan struct{}

	// The open transaction (committer goroutine only).
	tx      *bolt.Tx
	ran     []*request // requests whose fn ran in tx, in order
	waiters []*request // requests answered at the commit
	opened  time.Time
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

// submit queues r and waits for its answer.
func (c *committer) submit(r *request) (any, error) {
	r.done = make(chan struct{})
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return nil, ErrClosed
	}
	c.reqs <- r
	c.mu.RUnlock()
	<-r.done
	return r.result, r.err
}

// do runs fn in a transaction and waits for its commit.
func (c *committer) do(fn func(tx *bolt.Tx) error, after func()) error {
	r := &request{fn: func(tx *bolt.Tx) (any, error) { return nil, fn(tx) }}
	if after != nil {
		r.after = func(any) { after() }
	}
	_, err := c.submit(r)
	return err
}

// flush waits until everything submitted before it is committed, at most
// flushTimeout: a commit waiting for disk space holds reads of what it
// carries, which then fail instead of hanging.
func (c *committer) flush() error {
	r := &request{flush: true, done: make(chan struct{})}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	c.reqs <- r
	c.mu.RUnlock()
	t := time.NewTimer(flushTimeout)
	defer t.Stop()
	select {
	case <-r.done:
		return r.err
	case <-t.C:
		return fmt.Errorf("%w: the %s commit holding what this read needs has waited %v (for disk space?)", ErrStalled, c.store, flushTimeout)
	}
}

// flushTimeout bounds how long a read waits for the commit of what it must
// see.
const flushTimeout = 5 * time.Second

// ErrStalled: a read could not see applied writes because their commit is
// stalled (the disk is full).
var ErrStalled = errors.New("storage: commit stalled")

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
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	tickDue := false
	for {
		select {
		case r, ok := <-c.reqs:
			if !ok {
				if c.tx != nil {
					c.commit()
				}
				answer(c.waiters, nil)
				return
			}
			c.handle(r)
			drainReady(c.reqs, func() bool { return len(c.ran) < maxBatch }, c.handle)
		case <-linger.C:
		case <-tick:
			tickDue = c.onTick != nil
		}
		switch {
		case c.tx == nil && len(c.waiters) > 0:
			answer(c.waiters, nil) // flushes with nothing to commit
			c.waiters = c.waiters[:0]
		case c.tx == nil:
		case len(c.waiters) > 0 || len(c.ran) >= maxBatch || time.Since(c.opened) >= c.linger:
			c.commit()
		default:
			linger.Reset(c.linger - time.Since(c.opened))
		}
		// Ticks run between transactions; one that found a transaction open
		// waits for its commit, so steady load (always a transaction open)
		// cannot starve the checkpoints.
		if tickDue && c.tx == nil {
			c.onTick()
			tickDue = false
		}
	}
}

// drainReady hands fn what ch holds right now, while more says so; it
// never waits. A closed channel ends it too: the caller's next receive
// sees that.
func drainReady[T any](ch <-chan T, more func() bool, fn func(T)) {
	for more() {
		select {
		case v, ok := <-ch:
			if !ok {
				return
			}
			fn(v)
		default:
			return
		}
	}
}

// handle runs one request in the open transaction (opening one if need
// be). A request whose fn fails is answered with its error, and the
// transaction is rolled back and the others that ran in it run again, so
// one caller's failure never reaches another's data.
func (c *committer) handle(r *request) {
	if r.flush {
		c.waiters = append(c.waiters, r)
		return
	}
	if c.tx == nil {
		tx, err := c.db.Begin(true)
		if err != nil {
			r.err = fmt.Errorf("storage: %s: begin: %w", c.store, err)
			close(r.done)
			return
		}
		c.tx, c.opened = tx, time.Now()
	}
	res, err := r.fn(c.tx)
	if err != nil {
		r.err = err
		close(r.done)
		c.rerun()
		return
	}
	r.result = res
	c.ran = append(c.ran, r)
	if r.st != nil {
		r.st.pending.Store(true)
	}
	if r.deferred {
		close(r.done)
	} else {
		c.waiters = append(c.waiters, r)
	}
}

// rerun rolls the open transaction back and runs again every request that
// ran in it (reopen).
func (c *committer) rerun() {
	_ = c.tx.Rollback()
	c.tx = nil
	c.reopen()
}

// reopen begins a transaction and runs again every request that ran in the
// last one. They ran once on the same state, so they run again (their
// callers may already have their answers); if one does not, the state
// would no longer match what was answered, and the process must stop. A
// failure for want of space is retried until space is freed. With no
// answered request to lose, a failure fails the waiters instead; reopen
// then reports false.
func (c *committer) reopen() bool {
	for {
		tx, err := c.db.Begin(true)
		if err == nil {
			c.tx = tx
			if err = c.runAgain(); err == nil {
				return true
			}
			_ = c.tx.Rollback()
			c.tx = nil
		}
		if !c.hasDeferred() {
			c.failAll(fmt.Errorf("storage: %s: %w", c.store, err))
			return false
		}
		if !retryable(err) {
			panic(fmt.Sprintf("storage: %s: answered writes cannot be applied again: %v", c.store, err))
		}
		c.stall(err)
	}
}

func (c *committer) runAgain() error {
	for _, r := range c.ran {
		if _, err := r.fn(c.tx); err != nil {
			return err
		}
	}
	return nil
}

func (c *committer) hasDeferred() bool {
	for _, r := range c.ran {
		if r.deferred {
			return true
		}
	}
	return false
}

// commit commits the open transaction. A commit that fails for want of
// space is retried (with the requests run again) until it succeeds: its
// deferred requests were answered already, and the node waits for space
// rather than stopping. Any other failure of a transaction holding answered
// writes stops the process; one holding none fails its waiters.
func (c *committer) commit() {
	for {
		err := c.tryCommit()
		if err == nil {
			break
		}
		if !c.hasDeferred() {
			c.failAll(err)
			return
		}
		if !retryable(err) {
			panic(fmt.Sprintf("storage: %s: answered writes cannot be committed: %v", c.store, err))
		}
		c.stall(err)
		if !c.reopen() {
			return
		}
	}
	if c.onStall != nil {
		c.onStall(nil)
	}
	for _, r := range c.ran {
		if r.st != nil {
			r.st.pending.Store(false)
		}
		if r.after != nil {
			r.after(r.result)
		}
	}
	if c.onCommit != nil {
		c.onCommit(CommitInfo{Store: c.store, Requests: len(c.ran), Fsyncs: c.fsyncsPerCommit})
	}
	answer(c.waiters, nil)
	c.reset()
}

func (c *committer) tryCommit() error {
	if c.tx == nil {
		return fmt.Errorf("storage: %s: no transaction", c.store)
	}
	if c.beforeCommit != nil {
		if err := c.beforeCommit(); err != nil {
			_ = c.tx.Rollback()
			c.tx = nil
			return err
		}
	}
	err := c.tx.Commit()
	c.tx = nil
	if err != nil {
		return fmt.Errorf("storage: %s: commit: %w", c.store, err)
	}
	return nil
}

// stall waits before retrying a commit that failed for want of space.
func (c *committer) stall(err error) {
	if c.onStall != nil {
		c.onStall(err)
	}
	time.Sleep(stallRetry) // a retry interval, not synchronisation
}

// stallRetry is how often a commit refused for want of space is retried.
const stallRetry = 100 * time.Millisecond

// retryable: the disk is full (or over quota); freeing space cures it.
func retryable(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// failAll answers every request of the open transaction with err (none of
// them deferred) and drops it.
func (c *committer) failAll(err error) {
	if c.tx != nil {
		_ = c.tx.Rollback()
	}
	for _, r := range c.ran {
		if r.st != nil {
			r.st.pending.Store(false)
		}
	}
	answer(c.waiters, err)
	c.reset()
}

func (c *committer) reset() {
	c.tx = nil
	clear(c.ran)
	c.ran = c.ran[:0]
	clear(c.waiters)
	c.waiters = c.waiters[:0]
}

func answer(reqs []*request, err error) {
	for _, r := range reqs {
		r.err = err
		close(r.done)
	}
}
