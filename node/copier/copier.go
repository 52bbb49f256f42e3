// Package copier makes the record copies that collection writes queue
// (fsm CopyJob): each job's items go to the groups that own their target
// collections, then the job is marked done. Targets keep, per source and
// key, the newest source version they hold, so a copy made twice changes
// nothing: the worker may retry anything, in any order, after any
// failover.
package copier

import (
	"context"
	"log/slog"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// Group is the source group as the copier sees it.
type Group interface {
	// ReadyLeader: this replica leads the group and may work its jobs.
	ReadyLeader() bool
	// Jobs lists up to limit pending jobs, per source in version order.
	Jobs(limit int) ([]*fsmpb.CopyJob, error)
	// Done marks a job made.
	Done(ctx context.Context, source string, version uint64) error
}

// Router reaches the groups that own target collections.
type Router interface {
	GroupFor(collection string) (shard.GroupID, error)
	// Copy applies items (all owned by group) at that group's leader.
	Copy(ctx context.Context, group shard.GroupID, items []*fsmpb.CopyItem) error
}

const (
	// rescan is how often the copier looks for jobs without being woken.
	rescan = time.Second
	// jobsPerPass bounds the jobs one pass reads.
	jobsPerPass = 256
)

// Copier works off a group's copy jobs while it leads the group.
type Copier struct {
	group   Group
	router  Router
	log     *slog.Logger
	counted func(result string)
	wake    chan struct{}
}

// New makes a copier; counted (may be nil) is told "ok" or "retry" per job.
func New(group Group, router Router, log *slog.Logger, counted func(result string)) *Copier {
	if counted == nil {
		counted = func(string) {}
	}
	return &Copier{group: group, router: router, log: log, counted: counted, wake: make(chan struct{}, 1)}
}

// Poke wakes the copier; it never blocks (called on the apply path).
func (c *Copier) Poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run works off the jobs until ctx ends.
func (c *Copier) Run(ctx context.Context) {
	tick := time.NewTicker(rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-tick.C:
		}
		for ctx.Err() == nil && c.group.ReadyLeader() {
			jobs, err := c.group.Jobs(jobsPerPass)
			if err != nil {
				c.log.Warn("read copy jobs", "err", err)
				break
			}
			if len(jobs) == 0 || !c.pass(ctx, jobs) {
				break // done, or something failed: wait for the next tick
			}
		}
	}
}

// pass makes the jobs, a source's in version order; after a failure it
// skips that source's later jobs and goes on with the others. It reports
// whether every job was made.
func (c *Copier) pass(ctx context.Context, jobs []*fsmpb.CopyJob) bool {
	failed := map[string]bool{}
	for _, job := range jobs {
		if ctx.Err() != nil || !c.group.ReadyLeader() {
			return false
		}
		if failed[job.GetSource()] {
			continue
		}
		if err := c.make(ctx, job); err != nil {
			c.log.Warn("copy records", "source", job.GetSource(), "version", job.GetVersion(), "err", err)
			failed[job.GetSource()] = true
			c.counted("retry")
			continue
		}
		c.counted("ok")
	}
	return len(failed) == 0
}

// make sends a job's items to their groups, at most fsm.MaxCopyItems per
// command, then marks the job done.
func (c *Copier) make(ctx context.Context, job *fsmpb.CopyJob) error {
	byGroup := map[shard.GroupID][]*fsmpb.CopyItem{}
	var order []shard.GroupID
	for _, it := range job.GetItems() {
		for _, target := range it.GetTargets() {
			g, err := c.router.GroupFor(target)
			if err != nil {
				return err
			}
			if _, ok := byGroup[g]; !ok {
				order = append(order, g)
			}
			byGroup[g] = append(byGroup[g], &fsmpb.CopyItem{
				Collection: target, Key: it.GetTargetKey(), Deleted: it.GetDeleted(), Value: it.GetValue(), Metadata: it.GetMetadata(),
				Source: job.GetSource(), SourceVersion: job.GetVersion(),
			})
		}
	}
	for _, g := range order {
		items := byGroup[g]
		for len(items) > 0 {
			n := min(len(items), fsm.MaxCopyItems)
			if err := c.router.Copy(ctx, g, items[:n]); err != nil {
				return err
			}
			items = items[n:]
		}
	}
	return c.group.Done(ctx, job.GetSource(), job.GetVersion())
}
