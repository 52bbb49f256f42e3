package shard

import (
	"fmt"
	"slices"
)

// MaxReplicas is the replication factor a group gets once enough nodes exist.
const MaxReplicas = 3

// Initial is the first map of a cluster: n data groups (ids 1..n) owning
// equal contiguous slot ranges, created by creator and placed on nodes by
// Place (creator must be one of them).
func Initial(n int, creator string, nodes []string) (*Map, error) {
	if n < 1 || n > SlotCount {
		return nil, fmt.Errorf("shard: %d groups; want 1..%d", n, SlotCount)
	}
	groups := make([]Group, n)
	for i := range groups {
		groups[i] = Group{
			ID:       GroupID(i + 1),
			Ranges:   []Range{{Start: uint32(i * SlotCount / n), End: uint32((i + 1) * SlotCount / n)}},
			Replicas: []string{creator},
			Creator:  creator,
		}
	}
	return Place(&Map{Version: 0, Groups: groups}, nodes)
}

// Place returns the next version of m with every group's replicas placed on
// nodes (the active ones: a node not listed loses its replicas):
// min(MaxReplicas, len(nodes)) replicas per group, replicas spread evenly,
// and preferred leaders (Replicas[0]) spread evenly. It keeps every
// replica it can (moving data is costly), so adding a node moves only what
// balance needs. A pinned group (an operator's choice) keeps its replicas
// and their order; only a replica on a node no longer listed is replaced
// (the others keep their order, the new one comes last). Deterministic: the
// same input gives the same map.
func Place(m *Map, nodes []string) (*Map, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("shard: no nodes to place groups on")
	}
	nodes = slices.Sorted(slices.Values(nodes))
	rf := min(MaxReplicas, len(nodes))
	live := map[string]bool{}
	for _, n := range nodes {
		live[n] = true
	}
	load := map[string]int{}
	groups := make([]Group, len(m.Groups))
	for i, g := range m.Groups {
		limit := rf
		if g.Pinned {
			limit = MaxReplicas
		}
		var kept []string
		for _, r := range g.Replicas {
			if live[r] && len(kept) < limit {
				kept = append(kept, r)
				load[r]++
			}
		}
		groups[i] = Group{ID: g.ID, Ranges: slices.Clone(g.Ranges), Replicas: kept, Creator: g.Creator, Pinned: g.Pinned}
	}
	// Fill each group up to rf with the least-loaded nodes.
	for i := range groups {
		for len(groups[i].Replicas) < rf {
			best := ""
			for _, n := range nodes {
				if !slices.Contains(groups[i].Replicas, n) && (best == "" || load[n] < load[best]) {
					best = n
				}
			}
			groups[i].Replicas = append(groups[i].Replicas, best)
			load[best]++
		}
	}
	// Move single replicas from the fullest node to the emptiest until loads
	// differ by at most one: the fewest moves that balance.
	for {
		most, least := nodes[0], nodes[0]
		for _, n := range nodes {
			if load[n] > load[most] {
				most = n
			}
			if load[n] < load[least] {
				least = n
			}
		}
		if load[most]-load[least] <= 1 || !moveReplica(groups, most, least) {
			break
		}
		load[most]--
		load[least]++
	}
	spreadLeaders(groups, nodes)
	return New(m.Version+1, groups)
}

// moveReplica replaces from with to in the first unpinned group that has
// from and not to.
func moveReplica(groups []Group, from, to string) bool {
	for i := range groups {
		reps := groups[i].Replicas
		if groups[i].Pinned {
			continue
		}
		if j := slices.Index(reps, from); j >= 0 && !slices.Contains(reps, to) {
			reps[j] = to
			return true
		}
	}
	return false
}

// spreadLeaders orders each group's replicas so that the preferred leaders
// are spread evenly: each group takes, among its replicas, the node leading
// the fewest groups so far, keeping its current preferred leader on a tie.
// Pinned groups keep their order and count first.
func spreadLeaders(groups []Group, nodes []string) {
	leads := map[string]int{}
	limit := (len(groups) + len(nodes) - 1) / len(nodes)
	for _, g := range groups {
		if g.Pinned {
			leads[g.Replicas[0]]++
		}
	}
	for i := range groups {
		if groups[i].Pinned {
			continue
		}
		reps := groups[i].Replicas
		best := 0
		if leads[reps[0]] >= limit {
			for j := range reps {
				if leads[reps[j]] < leads[reps[best]] {
					best = j
				}
			}
		}
		reps[0], reps[best] = reps[best], reps[0]
		leads[reps[0]]++
	}
}
