package node

import (
	"context"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
)

const (
	// retentionScanPerRound bounds the timelines one round looks at, so a
	// round is short; the scan resumes where it stopped next round.
	retentionScanPerRound = 10000
	// retentionItemsPerCommand bounds the timelines one Trim names.
	retentionItemsPerCommand = 256
)

// retentionLoop makes one pass over a data group's timelines every
// RetentionInterval while this replica is its ready leader. The leader
// computes each cutoff from its own state and clock and proposes it inside
// a Trim, so every replica drops exactly the same entries.
func (g *Group) retentionLoop(ctx context.Context) {
	tick := time.NewTicker(g.node.cfg.RetentionInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		resume := ""
		for ctx.Err() == nil && g.isReadyLeader() {
			var err error
			if resume, err = g.trimRound(ctx, resume); err != nil {
				g.log.Warn("retention", "err", err)
				break
			}
			if resume == "" {
				break // the pass is complete
			}
		}
	}
}

// trimRound scans up to retentionScanPerRound timelines after resume and
// trims those with entries the policy no longer keeps. It returns where
// the next round resumes ("" from the start).
func (g *Group) trimRound(ctx context.Context, resume string) (string, error) {
	cfg := g.node.cfg
	policy := fsm.RetentionPolicy{
		User:         fsm.Retention{MaxAgeMs: cfg.UserRetention.MaxAge.Milliseconds(), MaxEntries: cfg.UserRetention.MaxEntries},
		Conversation: fsm.Retention{MaxAgeMs: cfg.ConversationRetention.MaxAge.Milliseconds(), MaxEntries: cfg.ConversationRetention.MaxEntries},
	}
	if cfg.CursorRetention {
		policy.Cursors = fsm.CursorRetention{Hold: true, Cap: cursorCap(cfg), InactiveAfterMs: cfg.DeviceInactiveAfter.Milliseconds()}
	}
	if policy.User == (fsm.Retention{}) && policy.Conversation == (fsm.Retention{}) {
		return "", nil
	}
	cands, last, err := g.fsm.RetentionCandidates(policy, cfg.Clock().UnixMilli(), resume, retentionItemsPerCommand, retentionScanPerRound)
	if err != nil || len(cands) == 0 {
		return last, err
	}
	trim := &fsmpb.Trim{}
	for _, c := range cands {
		trim.Items = append(trim.Items, &fsmpb.TrimItem{Timeline: c.Timeline, KeepFrom: c.KeepFrom})
	}
	if _, err := g.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Trim{Trim: trim}}); err != nil {
		return resume, err // try the same timelines again next round
	}
	g.node.metrics.trims.Add(float64(len(cands)))
	return last, nil
}

// cursorCap is how far device cursors may hold a user timeline back: the
// configured cap, or twice the user retention where it is not set.
func cursorCap(cfg Config) fsm.Retention {
	c := fsm.Retention{MaxAgeMs: cfg.CursorRetentionCap.MaxAge.Milliseconds(), MaxEntries: cfg.CursorRetentionCap.MaxEntries}
	if c.MaxAgeMs == 0 {
		c.MaxAgeMs = 2 * cfg.UserRetention.MaxAge.Milliseconds()
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = 2 * cfg.UserRetention.MaxEntries
	}
	return c
}
