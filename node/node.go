// Package node runs one syncstore process: its Raft peer (transport, log,
// snapshots), the state machine, and the leader-side operations the rpc layer
// calls. It knows nothing of gRPC.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
)

const (
	raftLogCacheSize    = 512
	snapshotsRetained   = 2
	transportMaxPool    = 3
	transportTimeout    = 10 * time.Second
	leaderNotifyBacklog = 16
)

// Node is one Raft peer with its state machine.
type Node struct {
	cfg Config
	log *slog.Logger

	fsm       *fsm.FSM
	raft      *raft.Raft
	mux       *Mux
	transport *raft.NetworkTransport
	logStore  *raftboltdb.BoltStore

	metrics *metrics

	// readyTerm is the term in which this node, as leader, has applied every
	// entry committed before the term began; 0 when it is not such a leader.
	readyTerm atomic.Uint64

	notifyCh  chan bool
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens the node's stores, starts its Raft peer and, with
// cfg.Bootstrap on an empty data dir, bootstraps a one-node cluster.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.NodeID),
		notifyCh: make(chan bool, leaderNotifyBacklog),
		metrics:  newMetrics(),
		stop:     make(chan struct{}),
	}
	if err := n.open(); err != nil {
		n.closeStores()
		return nil, err
	}
	n.wg.Add(1)
	go n.watchLeadership()
	return n, nil
}

func (n *Node) open() error {
	var err error
	n.fsm, err = fsm.Open(fsm.Options{Path: filepath.Join(n.cfg.DataDir, "state.db"), Logger: n.log})
	if err != nil {
		return err
	}
	n.logStore, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(n.cfg.DataDir, "raft.db"),
		BoltOptions: &bolt.Options{
			Timeout:        5 * time.Second,
			FreelistType:   bolt.FreelistMapType,
			NoFreelistSync: true,
		},
	})
	if err != nil {
		return fmt.Errorf("node: raft log: %w", err)
	}
	hlog := hclog.FromStandardLogger(slog.NewLogLogger(n.log.Handler(), slog.LevelInfo), &hclog.LoggerOptions{Name: "raft", Level: hclog.Info})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, snapshotsRetained, hlog)
	if err != nil {
		return fmt.Errorf("node: snapshot store: %w", err)
	}
	n.mux, err = ListenMux(n.cfg.RaftAddr, n.log)
	if err != nil {
		return err
	}
	stream, err := n.mux.Layer(0)
	if err != nil {
		return err
	}
	n.transport = raft.NewNetworkTransportWithLogger(stream, transportMaxPool, transportTimeout, hlog)
	n.cfg.RaftAddr = string(n.transport.LocalAddr()) // resolves a ":0" port
	logs, err := raft.NewLogCache(raftLogCacheSize, n.logStore)
	if err != nil {
		return fmt.Errorf("node: log cache: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.TrailingLogs = n.cfg.TrailingLogs
	// BatchApplyCh stays off: with a buffered apply channel a future still
	// queued at shutdown is never answered, and its caller would hang. The
	// leader batches queued applies into one log write either way.
	rc.BatchApplyCh = false
	// The state in bbolt survives restarts with its applied index; restoring
	// the last snapshot at start would only rewind it.
	rc.NoSnapshotRestoreOnStart = true
	rc.NotifyCh = n.notifyCh
	rc.Logger = hlog

	if n.cfg.Bootstrap {
		existing, err := raft.HasExistingState(logs, n.logStore, snaps)
		if err != nil {
			return fmt.Errorf("node: check existing state: %w", err)
		}
		if !existing {
			err := raft.BootstrapCluster(rc, logs, n.logStore, snaps, n.transport, raft.Configuration{Servers: []raft.Server{
				{ID: rc.LocalID, Address: n.transport.LocalAddr(), Suffrage: raft.Voter},
			}})
			if err != nil {
				return fmt.Errorf("node: bootstrap: %w", err)
			}
			n.log.Info("bootstrapped a new cluster")
		}
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, logs, n.logStore, snaps, n.transport)
	if err != nil {
		return fmt.Errorf("node: start raft: %w", err)
	}
	return nil
}

// Close shuts the node down: Raft first (so nothing more is applied), then
// the transport and the stores. Safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
			}
		}
		close(n.stop)
		n.wg.Wait()
		errs = append(errs, n.closeStores())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) closeStores() error {
	var errs []error
	if n.transport != nil {
		n.transport.CloseStreams()
		errs = append(errs, n.transport.Close())
	}
	if n.mux != nil {
		errs = append(errs, n.mux.Close())
	}
	if n.logStore != nil {
		errs = append(errs, n.logStore.Close())
	}
	if n.fsm != nil {
		errs = append(errs, n.fsm.Close())
	}
	return errors.Join(errs...)
}

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// GRPCAddr is the address this node registers for clients.
func (n *Node) GRPCAddr() string { return n.cfg.GRPCAddr }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

// Leader returns the current leader's id and gRPC address as far as this node
// knows; empty strings during an election.
func (n *Node) Leader() (id, grpcAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	if string(lid) == n.cfg.NodeID {
		return n.cfg.NodeID, n.cfg.GRPCAddr
	}
	nodes, err := n.fsm.Nodes()
	if err != nil {
		return string(lid), ""
	}
	for _, nd := range nodes {
		if nd.ID == string(lid) {
			return nd.ID, nd.GRPCAddr
		}
	}
	return string(lid), ""
}

func (n *Node) notLeader() error {
	id, addr := n.Leader()
	if id == n.cfg.NodeID {
		id, addr = "", "" // we were leader a moment ago: the next leader is unknown
	}
	return &NotLeaderError{LeaderID: id, LeaderGRPCAddr: addr}
}

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// watchLeadership marks the node ready for linearizable reads once, as a new
// leader, it has applied everything committed before its term (a barrier),
// and registers its addresses in the replicated node registry.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.notifyCh:
			n.readyTerm.Store(0)
			if isLeader {
				n.becomeReady()
			}
		}
	}
}

func (n *Node) becomeReady() {
	for n.raft.State() == raft.Leader {
		term := n.raft.CurrentTerm()
		err := n.raft.Barrier(n.cfg.ApplyTimeout).Error()
		if err == nil && n.raft.CurrentTerm() == term {
			n.readyTerm.Store(term)
			n.log.Info("leader ready", "term", term)
			n.registerSelf()
			return
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// registerSelf records this node's addresses if the registry lacks them.
func (n *Node) registerSelf() {
	nodes, err := n.fsm.Nodes()
	if err != nil {
		n.log.Warn("read node registry", "err", err)
		return
	}
	for _, nd := range nodes {
		if nd.ID == n.cfg.NodeID && nd.RaftAddr == n.cfg.RaftAddr && nd.GRPCAddr == n.cfg.GRPCAddr {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	err = n.register(ctx, fsm.Node{ID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, GRPCAddr: n.cfg.GRPCAddr})
	if err != nil {
		n.log.Warn("register self", "err", err)
	}
}

func (n *Node) register(ctx context.Context, nd fsm.Node) error {
	_, err := n.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{
		NodeId: nd.ID, RaftAddr: nd.RaftAddr, GrpcAddr: nd.GRPCAddr,
	}}})
	return err
}
