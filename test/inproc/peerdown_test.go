package inproc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/logbridge"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
)

// TestPeerDownLogs: while n3 is down, n1 says so itself, in one line, and
// the Raft and memberlist lines it writes about n3 stay bounded: each at
// most once per logbridge interval, not once per failed heartbeat of every
// group (about 20 a second before). When n3 is back, n1 says so once.
func TestPeerDownLogs(t *testing.T) {
	rec := &logRecorder{}
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = shardedGroups
		if cfg.NodeID == "n1" {
			cfg.Logger = rec.logger()
		}
	})
	n3Raft := c.Members[2].RaftAddr
	aboutN3 := func(l logLine) bool {
		for _, v := range l.attrs {
			if v == "n3" || strings.Contains(v, n3Raft) {
				return true
			}
		}
		return strings.Contains(l.msg, "n3") || strings.Contains(l.msg, n3Raft)
	}
	unreachable := func(l logLine) bool { return l.msg == "peer unreachable" && l.attrs["peer"] == "n3" }
	reachable := func(l logLine) bool { return l.msg == "peer reachable again" && l.attrs["peer"] == "n3" }

	stopped := time.Now()
	c.Stop(2)
	testutil.Eventually(t, 15*time.Second, func() error {
		if len(rec.matching(stopped, unreachable)) == 0 {
			return fmt.Errorf("n1 has not said that n3 is unreachable")
		}
		return nil
	})
	// The lines are counted over a window shorter than logbridge's
	// interval, from the stop on: waiting it out is the measurement, not a
	// wait for some state.
	const window = 5 * time.Second
	<-time.After(time.Until(stopped.Add(window)))
	end := stopped.Add(window)

	got := rec.matching(stopped, unreachable)
	if len(got) != 1 {
		t.Errorf("n1 said n3 is unreachable %d times, want once: %v", len(got), got)
	} else if got[0].attrs["groups"] == "0" || got[0].attrs["since"] == "" {
		t.Errorf("the unreachable line says neither since when nor how many groups: %v", got[0])
	}
	noisy := rec.matching(stopped, func(l logLine) bool {
		return l.at.Before(end) && aboutN3(l) && (strings.HasPrefix(l.msg, "raft") || l.attrs["component"] == "memberlist")
	})
	per := map[string][]logLine{}
	for _, l := range noisy {
		// Each error text has its own line (a refused dial says more than
		// the EOF of the stop).
		k := fmt.Sprintf("group %s %s %q error=%q", l.attrs["group"], l.level, l.msg, l.attrs["error"])
		per[k] = append(per[k], l)
	}
	for k, ls := range per {
		if len(ls) > 1 {
			t.Errorf("%s: %d lines in %s, want at most one per %s: %v", k, len(ls), window, logbridge.DefaultRepeatEvery, ls)
		}
	}
	t.Logf("n1 wrote %d Raft and memberlist lines about n3 in %s (%d kinds)", len(noisy), window, len(per))

	back := time.Now()
	c.Restart(2)
	testutil.Eventually(t, 15*time.Second, func() error {
		if len(rec.matching(back, reachable)) == 0 {
			return fmt.Errorf("n1 has not said that n3 is reachable again")
		}
		return nil
	})
	if got := rec.matching(stopped, unreachable); len(got) != 1 {
		t.Errorf("n1 said n3 is unreachable %d times, want once: %v", len(got), got)
	}
	if got := rec.matching(back, reachable); len(got) != 1 {
		t.Errorf("n1 said n3 is reachable %d times, want once: %v", len(got), got)
	}
	t.Log(rec.matching(stopped, func(l logLine) bool { return unreachable(l) || reachable(l) }))
}
