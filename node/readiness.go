package node

// Readiness says whether this node should be sent traffic now, and if not,
// why: load balancers, orchestrators and the gRPC health service follow it.
// A node is ready when it has a shard map and knows a meta leader (so the
// meta group has a quorum), and is neither draining nor removed. A node that
// is not ready still answers: its calls are forwarded or fail with a clear
// status, and it is not the health check that decides correctness.
func (n *Node) Readiness() (ready bool, reason string) {
	select {
	case <-n.removed:
		return false, "removed from the cluster"
	default:
	}
	if n.Draining() {
		return false, "draining: handing leadership over before it stops"
	}
	if n.shardMap() == nil {
		return false, "starting: no shard map yet (not joined, or the meta group has not applied one)"
	}
	if id, _ := n.meta.Leader(); id == "" {
		return false, "no meta quorum: the meta group has no leader this node knows of"
	}
	return true, ""
}

// Restarted reports whether this node started from a data dir that already
// held its meta group's Raft state: it belongs to a cluster, and --join and
// --bootstrap do not apply.
func (n *Node) Restarted() bool { return n.meta.hadState }
