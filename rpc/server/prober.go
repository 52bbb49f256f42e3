package server

import (
	"context"
	"fmt"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// Prober asks peers, over their Admin service, how far their replicas have
// applied; its Probe method is a node.Prober.
type Prober struct {
	peers *peers
}

// NewProber returns a Prober; Close it when the node is closed.
func NewProber() *Prober { return &Prober{peers: newPeers()} }

// Probe returns the Raft applied index of the group's replica at addr.
func (p *Prober) Probe(ctx context.Context, addr string, group shard.GroupID) (uint64, error) {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerCallTimeout)
	defer cancel()
	st, err := syncv1.NewAdminClient(conn).NodeStatus(ctx, &syncv1.NodeStatusRequest{})
	if err != nil {
		return 0, fmt.Errorf("probe %s: %w", addr, err)
	}
	if group == shard.MetaGroup {
		return st.GetAppliedIndex(), nil
	}
	for _, g := range st.GetGroups() {
		if g.GetGroupId() == uint64(group) {
			return g.GetAppliedIndex(), nil
		}
	}
	return 0, fmt.Errorf("probe %s: no replica of group %d there", addr, group)
}

// Close releases the connections.
func (p *Prober) Close() { p.peers.close() }
