// Package node runs one syncstore process: the shared Raft port, the meta
// group (node registry and shard map), the data groups the shard map assigns
// to this node, and the reconciler that drives the one toward the other. It
// knows nothing of gRPC; peers are probed through the injected Prober.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node/gossip"
	"github.com/syncstore/syncstore/node/heartbeat"
	"github.com/syncstore/syncstore/node/hub"
	"github.com/syncstore/syncstore/node/loginpolicy"
	"github.com/syncstore/syncstore/node/mover"
	"github.com/syncstore/syncstore/node/raftmux"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/storage"
)

// gossipEvery is how often a node refreshes what it gossips and looks for
// nodes to gossip with.
const gossipEvery = time.Second

// MaxMetaVoters bounds the voters of the meta group; further nodes follow it
// without voting.
const MaxMetaVoters = 5

// Prober asks the node at grpcAddr how far its replica of a group has
// applied the log. The rpc layer provides it; the reconciler uses it to
// promote caught-up replicas and to hand leadership over.
type Prober func(ctx context.Context, grpcAddr string, group shard.GroupID) (appliedIndex uint64, err error)

// Node is one syncstore process.
type Node struct {
	cfg Config
	log *slog.Logger
	// loginPolicy is cfg's, parsed once; every Login carries it.
	loginPolicy *fsmpb.LoginPolicy
	mux         *raftmux.Mux
	// restored: the groups a restore at start loaded (restore.go).
	restored map[shard.GroupID]RestoredGroup
	// deliveryRepairs counts the delivered marks a restore found out of
	// step with their conversations (restore.go).
	deliveryRepairs int
	// heartbeats coalesces the Raft heartbeats of every group to each
	// node (nil when Config.CoalesceHeartbeats is off).
	heartbeats *heartbeat.Coalescer
	storage    *storage.Engine
	gossip     *gossip.Gossip
	metrics    *metrics
	meta       *Group
	hub        *hub.Hub
	// metaFsyncs counts the fsyncs of the meta group's raft-boltdb file.
	metaFsyncs atomic.Uint64

	mu     sync.RWMutex
	groups map[shard.GroupID]*Group
	smap   atomic.Pointer[shard.Map]
	// nodesCache: the registry decoded at a meta applied index.
	nodesCache atomic.Pointer[nodesAt]

	transfers map[shard.GroupID]transferState // reconcile goroutine only
	mover     *mover.Mover
	rounds    atomic.Uint64 // reconcile rounds done (for tests)
	draining  atomic.Bool   // Drain was called: the node is stopping
	// peers: which peers this node cannot reach (peerwatch.go).
	peers *peerWatch
	// ops: the meta leader's memory of node removals (reconcile goroutine
	// only); removed is closed once this node finds itself removed.
	ops         *nodeOps
	removed     chan struct{}
	removedOnce sync.Once

	// clusterMu guards clusterID, this node's cluster ("" until it knows
	// it; clusterid.go); clusterWarned: a data dir and meta group that
	// disagree were reported.
	clusterMu     sync.Mutex
	clusterID     string
	clusterWarned atomic.Bool

	// upgrade: cluster versions (upgrade.go).
	upgrade upgradeState

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens the shared Raft port and the meta group and starts the
// reconciler, which opens the data groups. With cfg.Bootstrap on an empty
// data dir it creates a new cluster; its first meta leader then writes a
// shard map of cfg.Shards groups.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy, err := loginpolicy.Parse(cfg.LoginPolicy, cfg.DeviceClasses)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	n := &Node{
		cfg:         cfg,
		loginPolicy: policy,
		log:         cfg.Logger.With("node", cfg.NodeID),
		metrics:     newMetrics(),
		hub:         hub.New(),
		groups:      map[shard.GroupID]*Group{},
		transfers:   map[shard.GroupID]transferState{},
		peers:       newPeerWatch(),
		stop:        make(chan struct{}),
		removed:     make(chan struct{}),
	}
	if err := checkRemovedMarker(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := checkRestoreMarker(cfg.DataDir, cfg.RestoreFrom != ""); err != nil {
		return nil, err
	}
	var restoring *backup.Reader
	if cfg.RestoreFrom != "" {
		if restoring, err = openVerifiedBackup(cfg.RestoreFrom); err != nil {
			return nil, err
		}
		defer restoring.Close()
		if err := prepareRestoreDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if err := checkLayout(cfg.DataDir); err != nil {
		return nil, err
	}
	waitsForJoin, err := n.initClusterID()
	if err != nil {
		return nil, err
	}
	n.storage, err = storage.Open(storage.Options{
		Dir:                filepath.Join(cfg.DataDir, "storage"),
		Logger:             n.log,
		InitialMmapSize:    cfg.StateMmapBytes,
		CheckpointInterval: cfg.StateCheckpointInterval,
		ReserveBytes:       cfg.DiskReserveBytes,
		WALSegmentBytes:    cfg.WALSegmentBytes,
		StateLinger:        cfg.StateLinger,
		OnCommit:           n.metrics.observeCommit,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := n.checkVersionAtStart(); err != nil {
		n.storage.Close()
		return nil, err
	}
	muxOpts := []raftmux.Option{raftmux.WithClusterID(n.clusterID)}
	if waitsForJoin {
		muxOpts = append(muxOpts, raftmux.WithAdoption(n.adoptFromRaft))
	}
	if cfg.PeerTLS != nil {
		muxOpts = append(muxOpts, raftmux.WithTLS(cfg.PeerTLS.Server, cfg.PeerTLS.Client))
	}
	if n.mux, err = raftmux.Listen(cfg.RaftAddr, cfg.NodeID, n.log, muxOpts...); err != nil {
		n.storage.Close()
		return nil, err
	}
	n.cfg.RaftAddr = n.mux.Addr().String() // resolves a ":0" port
	if cfg.CoalesceHeartbeats {
		layer, err := n.mux.Layer(raftmux.HeartbeatGroup)
		if err != nil {
			n.mux.Close()
			n.storage.Close()
			return nil, err
		}
		n.heartbeats = heartbeat.New(layer, n.log)
	}
	n.gossip, err = gossip.Start(gossip.Config{ // after the Raft address is resolved
		NodeID: n.cfg.NodeID, BindAddr: n.cfg.GossipAddr, GRPCAddr: n.cfg.GRPCAddr, RaftAddr: n.cfg.RaftAddr,
		ProbeInterval: n.cfg.GossipProbeInterval, Keys: n.cfg.GossipKeys, ClusterID: n.ClusterID(),
	}, n.log)
	if err != nil {
		n.closeHeartbeats()
		n.mux.Close()
		n.storage.Close()
		return nil, err
	}
	n.cfg.GossipAddr = n.gossip.Addr()
	if restoring != nil {
		if err := n.restoreGroups(restoring); err != nil {
			n.gossip.Close()
			n.closeHeartbeats()
			n.mux.Close()
			n.storage.Close()
			return nil, err
		}
	}
	if n.meta, err = n.openGroup(shard.MetaGroup, cfg.Bootstrap, n.onMetaReady); err != nil {
		n.gossip.Close()
		n.closeHeartbeats()
		n.mux.Close()
		n.storage.Close()
		return nil, err
	}
	n.mover = newMover(n)
	n.wg.Add(3)
	go n.reconcileLoop()
	go n.gossipLoop()
	go n.moverLoop()
	return n, nil
}

// Close stops the reconciler, then every group, then the Raft port. Safe to
// call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.stop)
		n.wg.Wait()
		errs := []error{n.gossip.Close()}
		for _, g := range n.groupsSnapshot() {
			errs = append(errs, g.Close())
		}
		errs = append(errs, n.meta.Close(), n.closeHeartbeats())
		errs = append(errs, n.mux.Close(), n.storage.Close())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// ReconcileRounds is how many reconcile rounds this node has done.
func (n *Node) ReconcileRounds() uint64 { return n.rounds.Load() }

// Config returns the node's configuration (with resolved addresses).
func (n *Node) Config() Config { return n.cfg }

// IsLeader reports whether this node leads the meta group.
func (n *Node) IsLeader() bool { return n.meta.IsLeader() }

// MetaGroup is this node's replica of the meta group.
func (n *Node) MetaGroup() *Group { return n.meta }

// Group returns the local replica of a data group, or nil.
func (n *Node) Group(id shard.GroupID) *Group {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.groups[id]
}

// groupsSnapshot lists the local data groups by id.
func (n *Node) groupsSnapshot() []*Group {
	n.mu.RLock()
	out := make([]*Group, 0, len(n.groups))
	for _, g := range n.groups {
		out = append(out, g)
	}
	n.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Group) int { return cmp.Compare(a.id, b.id) })
	return out
}

// Groups lists the local data groups by id.
func (n *Node) Groups() []*Group { return n.groupsSnapshot() }

// shardMap is the newest shard map this node has applied, or nil.
func (n *Node) shardMap() *shard.Map { return n.smap.Load() }

// ShardMap is the newest shard map this node knows, or nil before the
// cluster has one.
func (n *Node) ShardMap() *shard.Map { return n.shardMap() }

// route finds the local replica of the group owning a timeline. When this
// node hosts none, the error names the group's preferred leader, to which
// the rpc layer forwards.
func (n *Node) route(timeline string) (*Group, error) {
	m := n.shardMap()
	if m == nil {
		return nil, ErrNoShardMap
	}
	id := m.GroupFor(timeline)
	if g := n.Group(id); g != nil {
		return g, nil
	}
	return nil, n.notHosted(id)
}

// notHosted is the error for a group with no replica here: it names the
// group's leader as gossip reports it or, failing that, its preferred
// leader in the shard map.
func (n *Node) notHosted(id shard.GroupID) error {
	if m, ok := n.gossip.LeaderOf(id); ok && m.GRPCAddr != "" {
		return &NotLeaderError{Group: id, LeaderID: m.ID, LeaderGRPCAddr: m.GRPCAddr}
	}
	target := ""
	if m := n.shardMap(); m != nil {
		if sg, ok := m.Group(id); ok && len(sg.Replicas) > 0 {
			target = sg.Replicas[0]
		}
	}
	return &NotLeaderError{Group: id, LeaderID: target, LeaderGRPCAddr: n.grpcAddrOf(target)}
}

// Gossip reports every node this node's gossip has heard of.
func (n *Node) Gossip() []GossipMember { return n.gossip.Members() }

func (n *Node) closeHeartbeats() error {
	if n.heartbeats == nil {
		return nil
	}
	return n.heartbeats.Close()
}

// publishGroups gossips the groups this node hosts, leads and has fenced.
func (n *Node) publishGroups() {
	var hosts, leads, fenced []shard.GroupID
	for _, g := range n.groupsSnapshot() {
		hosts = append(hosts, g.id)
		if g.IsLeader() {
			leads = append(leads, g.id)
		}
		if g.Fenced() != "" {
			fenced = append(fenced, g.id)
		}
	}
	n.gossip.SetGroups(hosts, leads, fenced)
}

// gossipLoop spreads which groups this node leads and joins the gossip of
// every registered node it has not met, every gossipEvery.
func (n *Node) gossipLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(gossipEvery)
	defer tick.Stop()
	for {
		if id := n.ClusterID(); id != "" {
			n.gossip.SetClusterID(id) // a no-op once set; the Raft port may have adopted it
		}
		n.publishGroups()
		n.checkPeers()
		if nodes, err := n.meta.fsm.Nodes(); err == nil {
			var addrs []string
			for _, nd := range nodes {
				if nd.ID != n.cfg.NodeID && nd.State != fsm.NodeRemoved {
					addrs = append(addrs, nd.GossipAddr)
				}
			}
			n.gossip.Join(addrs)
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// nodeRecord looks a node up in the replicated registry.
func (n *Node) nodeRecord(id string) (fsm.Node, bool) {
	if id == "" {
		return fsm.Node{}, false
	}
	if id == n.cfg.NodeID {
		return fsm.Node{ID: id, RaftAddr: n.cfg.RaftAddr, GRPCAddr: n.cfg.GRPCAddr, GossipAddr: n.cfg.GossipAddr}, true
	}
	nodes, err := n.registry()
	if err != nil {
		return fsm.Node{}, false
	}
	for _, nd := range nodes {
		if nd.ID == id {
			return nd, true
		}
	}
	return fsm.Node{}, false
}

// registry is the node registry as this node's meta replica holds it,
// decoded again only when the meta group applied something since: routing
// asks for it on every forwarded call.
func (n *Node) registry() ([]fsm.Node, error) {
	applied := n.meta.fsm.AppliedIndex()
	if c := n.nodesCache.Load(); c != nil && c.applied == applied {
		return c.nodes, nil
	}
	nodes, err := n.meta.fsm.Nodes()
	if err != nil {
		return nil, err
	}
	n.nodesCache.Store(&nodesAt{applied: applied, nodes: nodes})
	return nodes, nil
}

type nodesAt struct {
	applied uint64
	nodes   []fsm.Node
}

func (n *Node) grpcAddrOf(id string) string {
	nd, _ := n.nodeRecord(id)
	return nd.GRPCAddr
}

// GRPCAddrOf returns a node's registered gRPC address, or "".
func (n *Node) GRPCAddrOf(id string) string { return n.grpcAddrOf(id) }

// Leader returns the meta group's leader (where joins go).
func (n *Node) Leader() (id, grpcAddr string) { return n.meta.Leader() }

func (n *Node) onMetaReady(*Group) { n.registerSelf() }

// registerSelf records this node's addresses if the registry lacks them.
func (n *Node) registerSelf() {
	nodes, err := n.meta.fsm.Nodes()
	if err != nil {
		n.log.Warn("read node registry", "err", err)
		return
	}
	self, _ := n.nodeRecord(n.cfg.NodeID)
	// Registered at these addresses already, or removed (it stops: only a
	// fresh data dir joins again).
	if slices.ContainsFunc(nodes, func(o fsm.Node) bool { return o.SameAddrs(self) || (o.ID == self.ID && o.State == fsm.NodeRemoved) }) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if err := n.register(ctx, self); err != nil {
		n.log.Warn("register self", "err", err)
	}
}

func (n *Node) register(ctx context.Context, nd fsm.Node) error {
	_, err := n.meta.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{
		NodeId: nd.ID, RaftAddr: nd.RaftAddr, GrpcAddr: nd.GRPCAddr, GossipAddr: nd.GossipAddr,
	}}})
	return err
}

// Members lists the meta group's configuration.
func (n *Node) Members() ([]Member, error) { return n.meta.Members() }

// GroupState is one replica's state, for comparing replicas.
type GroupState struct {
	Digest  string
	Applied uint64
	// DeliveriesPending: the group's outbox, or its record copies, are not
	// all done.
	DeliveriesPending bool
}

// States hashes every local replica, the meta group's included.
func (n *Node) States() (map[shard.GroupID]GroupState, error) {
	out := map[shard.GroupID]GroupState{}
	for _, g := range append([]*Group{n.meta}, n.groupsSnapshot()...) {
		d, applied, err := g.DigestWithIndex() // one transaction: the pair matches
		if err != nil {
			return nil, err
		}
		st := GroupState{Digest: d, Applied: applied}
		if g.outbox != nil {
			if st.DeliveriesPending, err = g.PendingDeliveries(); err != nil {
				return nil, err
			}
			copies, err := g.PendingCopies(1)
			if err != nil {
				return nil, err
			}
			st.DeliveriesPending = st.DeliveriesPending || copies > 0
		}
		out[g.id] = st
	}
	return out, nil
}

// GossipMember is one node as this node's gossip sees it.
type GossipMember = gossip.Member

// Gossip health of a node.
const (
	HealthAlive   = gossip.HealthAlive
	HealthSuspect = gossip.HealthSuspect
	HealthDead    = gossip.HealthDead
	HealthLeft    = gossip.HealthLeft
)
