package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/shard"
)

// StatusFetcher asks the node at grpcAddr for its Status (its groups, their
// leaders and Raft configurations as it sees them). The rpc layer provides
// it; the meta leader uses it to see where a node still has replicas
// before removing it, and whether a group would survive losing it.
type StatusFetcher func(ctx context.Context, grpcAddr string) (Status, error)

// viewTimeout bounds each status call of a cluster view.
const viewTimeout = 2 * time.Second

// groupView is a data group's Raft configuration as the best-placed
// replica that answered sees it: its leader of the highest term, else the
// follower of the highest term.
type groupView struct {
	Leader  string // "" when no replica that answered leads it
	Term    uint64
	Members []Member
}

// clusterView is what the nodes of the registry answered.
type clusterView struct {
	groups map[shard.GroupID]groupView
	// unreachable: registered nodes that are not removed and did not
	// answer (node id -> why).
	unreachable map[string]string
}

// contains reports whether any group's configuration lists id, and which.
func (v clusterView) contains(id string) []shard.GroupID {
	var out []shard.GroupID
	for gid, g := range v.groups {
		if slices.ContainsFunc(g.Members, func(m Member) bool { return m.ID == id }) {
			out = append(out, gid)
		}
	}
	slices.Sort(out)
	return out
}

// gatherView asks every registered node that is neither removed nor
// declared dead (this one locally) for its status, in parallel, each call bounded by viewTimeout.
func (n *Node) gatherView(ctx context.Context, nodes []fsm.Node) clusterView {
	v := clusterView{groups: map[shard.GroupID]groupView{}, unreachable: map[string]string{}}
	var mu sync.Mutex
	add := func(st Status) {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range st.Groups {
			id := shard.GroupID(g.ID)
			cur, ok := v.groups[id]
			leads := g.State == "Leader"
			better := !ok ||
				(leads && (cur.Leader == "" || g.Term > cur.Term)) ||
				(!leads && cur.Leader == "" && g.Term > cur.Term)
			if better {
				gv := groupView{Term: g.Term, Members: g.Members}
				if leads {
					gv.Leader = st.ID
				}
				v.groups[id] = gv
			}
		}
	}
	var wg sync.WaitGroup
	for _, nd := range nodes {
		if nd.State == fsm.NodeRemoved {
			continue
		}
		if nd.ID == n.cfg.NodeID {
			st, err := n.Status()
			if err != nil {
				v.unreachable[nd.ID] = err.Error()
				continue
			}
			add(st)
			continue
		}
		if nd.Dead {
			v.unreachable[nd.ID] = "declared dead" // gone for good: not asked, nor waited for
			continue
		}
		if n.cfg.StatusFetcher == nil || nd.GRPCAddr == "" {
			v.unreachable[nd.ID] = "no way to ask it"
			continue
		}
		wg.Add(1)
		go func(nd fsm.Node) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, viewTimeout)
			defer cancel()
			st, err := n.cfg.StatusFetcher(cctx, nd.GRPCAddr)
			if err != nil {
				mu.Lock()
				v.unreachable[nd.ID] = err.Error()
				mu.Unlock()
				return
			}
			add(st)
		}(nd)
	}
	wg.Wait()
	return v
}

// checkDeadRemoval refuses declaring id dead when a group would be left
// without a quorum or with at most one copy: after it, the group's voters
// that are neither id, nor declared dead, nor removed, nor unreachable now
// must be at least two and a majority. The error wraps ErrWouldLoseQuorum
// and names every such group.
func checkDeadRemoval(id string, nodes []fsm.Node, m *shard.Map, v clusterView) error {
	gone := map[string]string{id: "being removed"}
	for _, nd := range nodes {
		switch {
		case nd.ID == id:
		case nd.State == fsm.NodeRemoved:
			gone[nd.ID] = "removed"
		case nd.Dead:
			gone[nd.ID] = "declared dead"
		case v.unreachable[nd.ID] != "":
			gone[nd.ID] = "not answering"
		}
	}
	var bad []string
	for _, sg := range m.Groups {
		var voters []string
		if gv, ok := v.groups[sg.ID]; ok {
			for _, mb := range gv.Members {
				if mb.Voter {
					voters = append(voters, mb.ID)
				}
			}
		} else {
			voters = slices.Clone(sg.Replicas) // no replica answered: the map's word
		}
		if !slices.Contains(voters, id) && !slices.Contains(sg.Replicas, id) {
			continue
		}
		var left, lost []string
		for _, vo := range voters {
			if why, ok := gone[vo]; ok {
				lost = append(lost, vo+" "+why)
			} else {
				left = append(left, vo)
			}
		}
		if len(left) >= 2 && 2*len(left) > len(voters) {
			continue
		}
		what := "its quorum"
		if len(left) <= 1 {
			what = "all but one copy"
			if len(left) == 0 {
				what = "its last copy"
			}
		}
		bad = append(bad, fmt.Sprintf("group %d would lose %s (voters %s; %s)", sg.ID, what, strings.Join(voters, ","), strings.Join(lost, ", ")))
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: removing %s as dead: %s", ErrWouldLoseQuorum, id, strings.Join(bad, "; "))
}
