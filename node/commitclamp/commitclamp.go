// Package commitclamp keeps a Raft follower from committing entries its
// leader has not matched.
//
// hashicorp/raft (v1.7.3, raft.go appendEntries) sets a follower's commit
// index to min(LeaderCommitIndex, the follower's last log index). The Raft
// paper says min(leaderCommit, index of the last new entry): the follower
// may hold, past what the request matched, entries a deposed leader wrote
// in an old term that the new leader replaced. With the library's rule a
// deposed leader that rejoins as a follower and gets an AppendEntries that
// matches below its stale entries (an empty one, sent when commits stop
// flowing, or a short one) commits and applies its own stale entry at an
// index where the cluster committed a different one: the replicas diverge.
// jepsen-lite found it (a paused leader resumed with a new entry in its
// log; its group's user timelines then held two conversations' messages in
// the other order than the other replicas).
//
// Wrap puts the paper's rule in front of Raft: every AppendEntries a group
// receives gets LeaderCommitIndex lowered to PrevLogEntry + len(Entries),
// the last index the request vouches for. The follower learns the rest of
// the commit index from the next request, which the leader sends at least
// every CommitTimeout while commits stop flowing.
package commitclamp

import (
	"sync"

	"github.com/hashicorp/raft"
)

// Inner is what a group's transport offers Raft.
type Inner interface {
	raft.Transport
	raft.WithClose
	raft.WithPreVote
}

// Transport is a group's Raft transport whose incoming AppendEntries are
// clamped (see the package comment).
type Transport struct {
	Inner
	out  chan raft.RPC
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// Wrap starts clamping what inner delivers to Raft.
func Wrap(inner Inner) *Transport {
	t := &Transport{Inner: inner, out: make(chan raft.RPC), stop: make(chan struct{})}
	in := inner.Consumer()
	t.wg.Go(func() {
		for {
			select {
			case rpc := <-in:
				if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
					Clamp(req)
				}
				select {
				case t.out <- rpc:
				case <-t.stop:
					return
				}
			case <-t.stop:
				return
			}
		}
	})
	return t
}

// Clamp lowers a request's commit index to the last index it vouches for.
func Clamp(req *raft.AppendEntriesRequest) {
	if vouched := req.PrevLogEntry + uint64(len(req.Entries)); req.LeaderCommitIndex > vouched {
		req.LeaderCommitIndex = vouched
	}
}

// Consumer is the clamped stream of RPCs.
func (t *Transport) Consumer() <-chan raft.RPC { return t.out }

// Close stops clamping and closes the inner transport.
func (t *Transport) Close() error {
	t.once.Do(func() { close(t.stop) })
	t.wg.Wait()
	return t.Inner.Close()
}
