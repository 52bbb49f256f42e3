package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// readFinal waits until every replica of every group has applied the same
// index, then reads every timeline from every replica that holds it and
// every replica's digest, and every collection from every replica.
func readFinal(ctx context.Context, net *network, admin *client.Client, timelines []string, settle time.Duration) (history.Final, error) {
	final := history.Final{Timelines: map[string]map[string][]history.Entry{}, Digests: map[uint64]map[string]string{}}
	var smap *syncv1.ShardMapResponse
	err := admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		smap, err = a.ShardMap(ctx, &syncv1.ShardMapRequest{})
		return err
	})
	if err != nil {
		return final, fmt.Errorf("shard map: %w", err)
	}
	m, err := client.ShardMap(smap)
	if err != nil {
		return final, fmt.Errorf("shard map: %w", err)
	}

	perNode := map[string]*client.Client{}
	for _, h := range net.hosts {
		// Pinned: each node's reads are its own replica's copy (a routing
		// client would read every group's leader under every node's name).
		opts, err := net.sec.options("admin", client.Options{AttemptTimeout: 3 * time.Second, Pinned: true})
		if err != nil {
			return final, err
		}
		cl, err := client.New([]string{h.grpcAddr()}, opts)
		if err != nil {
			return final, err
		}
		defer cl.Close()
		perNode[h.id] = cl
	}

	// Settle: the same applied index on every replica of every group.
	deadline := time.Now().Add(settle)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		digests, applied, pending, err := allDigests(ctx, perNode)
		if err == nil && converged(applied, m) && len(pending) == 0 {
			final.Digests = digests
			break
		}
		if time.Now().After(deadline) {
			final.Digests = digests
			return final, fmt.Errorf("replicas did not converge within %s (last error %v, applied %v, deliveries pending in groups %v)", settle, err, applied, pending)
		}
		select {
		case <-ctx.Done():
			return final, ctx.Err()
		case <-tick.C:
		}
	}

	final.Collections, err = readCollections(ctx, perNode, func(coll string) []string {
		g, _ := m.Group(m.GroupFor(coll))
		return g.Replicas
	})
	if err != nil {
		return final, err
	}
	final.Users, err = readUsers(ctx, perNode, func(user string) []string {
		g, _ := m.Group(m.GroupFor(user))
		return g.Replicas
	})
	if err != nil {
		return final, err
	}
	for _, tl := range timelines {
		g, _ := m.Group(m.GroupFor(tl))
		for _, node := range g.Replicas {
			entries, err := readAll(ctx, perNode[node], tl)
			if err != nil {
				return final, fmt.Errorf("read %s on %s: %w", tl, node, err)
			}
			if final.Timelines[node] == nil {
				final.Timelines[node] = map[string][]history.Entry{}
			}
			final.Timelines[node][tl] = entries
		}
	}
	return final, nil
}

// allDigests asks every node for its replicas' digests and applied indexes,
// and lists the groups whose outbox some replica reports not empty.
func allDigests(ctx context.Context, perNode map[string]*client.Client) (map[uint64]map[string]string, map[uint64]map[string]uint64, []uint64, error) {
	digests, applied := map[uint64]map[string]string{}, map[uint64]map[string]uint64{}
	var pending []uint64
	for _, node := range slices.Sorted(maps.Keys(perNode)) {
		var resp *syncv1.DigestsResponse
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := perNode[node].Admin(cctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
			resp, err = a.Digests(ctx, &syncv1.DigestsRequest{})
			return err
		})
		cancel()
		if err != nil {
			return digests, applied, pending, fmt.Errorf("digests of %s: %w", node, err)
		}
		for g, p := range resp.GetDeliveriesPending() {
			if p && !slices.Contains(pending, g) {
				pending = append(pending, g)
			}
		}
		for g, d := range resp.GetDigests() {
			if digests[g] == nil {
				digests[g], applied[g] = map[string]string{}, map[string]uint64{}
			}
			digests[g][node], applied[g][node] = d, resp.GetApplied()[g]
		}
	}
	return digests, applied, pending, nil
}

// converged: every replica the shard map names reports its group (a node
// just restarted has not opened its groups yet, and the others alone
// would agree while it replays), all at one applied index per group.
func converged(applied map[uint64]map[string]uint64, m *shard.Map) bool {
	for _, g := range m.Groups {
		for _, r := range g.Replicas {
			if _, ok := applied[uint64(g.ID)][r]; !ok {
				return false
			}
		}
	}
	for _, byNode := range applied {
		var first uint64
		n := 0
		for _, a := range byNode {
			if n > 0 && a != first {
				return false
			}
			first, n = a, n+1
		}
	}
	return len(applied) > 0
}

// readAll pages through a timeline on one node with stale reads, so what
// is read is that replica's own copy.
func readAll(ctx context.Context, cl *client.Client, tl string) ([]history.Entry, error) {
	var out []history.Entry
	var after uint64
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cl.Pull(cctx, tl, after, 1000, client.Stale)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, e := range resp.GetEntries() {
			out = append(out, entryOf(e))
			after = e.GetSeq()
		}
		if resp.GetStatus() != syncv1.PullStatus_PULL_STATUS_MORE {
			return out, nil
		}
	}
}
