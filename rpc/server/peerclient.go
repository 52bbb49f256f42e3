package server

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// PeerClient is how a node calls other nodes for its background work: its
// Probe method is a node.Prober (how far a replica has applied) and its
// Deliver method a node.Deliverer (conversation fan-out).
type PeerClient struct {
	peers *peers
}

// NewPeerClient returns a PeerClient that dials with peer TLS (nil:
// plaintext); Close it when the node is closed.
func NewPeerClient(peerTLS *tls.Config) *PeerClient { return &PeerClient{peers: newPeers(peerTLS)} }

// Probe returns the Raft applied index of the group's replica at addr.
func (p *PeerClient) Probe(ctx context.Context, addr string, group shard.GroupID) (uint64, error) {
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
func (p *PeerClient) Close() { p.peers.close() }

// Deliver sends deliveries for a group to the node at addr, which applies
// them if it leads the group or forwards them once to the leader.
func (p *PeerClient) Deliver(ctx context.Context, addr string, group shard.GroupID, items []node.Delivery) (fsm.DeliverResult, error) {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return fsm.DeliverResult{}, err
	}
	resp, err := syncv1.NewPeerClient(conn).Deliver(ctx, deliverRequest(group, items))
	if err != nil {
		return fsm.DeliverResult{}, fmt.Errorf("deliver to group %d at %s: %w", group, addr, err)
	}
	return fsm.DeliverResult{Written: int(resp.GetWritten()), Skipped: int(resp.GetSkipped())}, nil
}

// DigestAt is a node.DigestProber: the digest of the group's replica at
// addr at a digest point.
func (p *PeerClient) DigestAt(ctx context.Context, addr string, group shard.GroupID, index uint64) (string, bool, error) {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return "", false, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerCallTimeout)
	defer cancel()
	resp, err := syncv1.NewPeerClient(conn).DigestAt(ctx, &syncv1.DigestAtRequest{GroupId: uint64(group), Index: index})
	if err != nil {
		return "", false, fmt.Errorf("digest of group %d at %s: %w", group, addr, err)
	}
	return resp.GetDigest(), resp.GetKnown(), nil
}

// Fence is a node.Fencer: it tells the node at addr to fence its replica
// of the group.
func (p *PeerClient) Fence(ctx context.Context, addr string, group shard.GroupID, reason string) error {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, peerCallTimeout)
	defer cancel()
	if _, err := syncv1.NewPeerClient(conn).Fence(ctx, &syncv1.FenceRequest{GroupId: uint64(group), Reason: reason}); err != nil {
		return fmt.Errorf("fence group %d at %s: %w", group, addr, err)
	}
	return nil
}

// Copy is a node.Copier: it sends record copies for a group to the node at
// addr, which applies them if it leads the group or forwards them once.
func (p *PeerClient) Copy(ctx context.Context, addr string, group shard.GroupID, items []*fsmpb.CopyItem) (fsm.CopyResult, error) {
	conn, err := p.peers.conn(addr)
	if err != nil {
		return fsm.CopyResult{}, err
	}
	resp, err := syncv1.NewPeerClient(conn).Copy(ctx, copyRequest(group, items))
	if err != nil {
		return fsm.CopyResult{}, fmt.Errorf("copy to group %d at %s: %w", group, addr, err)
	}
	return fsm.CopyResult{Written: int(resp.GetWritten()), Skipped: int(resp.GetSkipped())}, nil
}
