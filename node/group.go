package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/logbridge"
	"github.com/syncstore/syncstore/node/batch"
	"github.com/syncstore/syncstore/node/commitclamp"
	"github.com/syncstore/syncstore/node/copier"
	"github.com/syncstore/syncstore/node/heartbeat"
	"github.com/syncstore/syncstore/node/outbox"
	"github.com/syncstore/syncstore/shard"
)

const (
	raftLogCacheSize    = 512
	snapshotsRetained   = 2
	transportMaxPool    = 3
	transportTimeout    = 10 * time.Second
	leaderNotifyBacklog = 16
	// maxAppendEntries bounds the entries of one log write and one
	// AppendEntries RPC (hashicorp/raft's default is 64).
	maxAppendEntries = 256
)

// Group is one Raft group hosted on a node: its Raft instance, log, snapshots
// and state machine, in a directory of its own, with its traffic on the
// node's shared Raft port.
type Group struct {
	id   shard.GroupID
	node *Node
	log  *slog.Logger
	dir  string
	// hadState: the replica found Raft state when it opened (a restart).
	hadState bool

	fsm  *fsm.FSM
	raft *raft.Raft
	// touches: devices seen here, to propose their last-seen time.
	touches touches
	// transport is the group's Raft transport: its own connections on the
	// shared port, its heartbeats through the node's coalescer when on
	// (heartbeats), and followers' commit indexes clamped (commitclamp).
	transport  raft.Transport
	netTrans   *raft.NetworkTransport
	heartbeats *heartbeat.Transport
	// metaLog is the meta group's own log and stable store (raft-boltdb);
	// data groups keep theirs in the node's storage engine.
	metaLog *raftboltdb.BoltStore
	// snapTuner grows a data group's snapshot threshold with its state
	// (snapshotpolicy.go); nil for the meta group.
	snapTuner *snapshotTuner

	// readyTerm is the term in which this replica, as leader, has applied
	// every entry committed before the term began; 0 when it is not such a
	// leader.
	readyTerm atomic.Uint64
	// onReady runs once per term when this replica becomes a ready leader.
	onReady func(*Group)
	// fenced holds why this replica found its state damaged (fence.go).
	fenced atomic.Pointer[string]
	// digestCheck: a replica digest check is running; lastDigestCheck
	// (reconcile goroutine only) when the last one started.
	digestCheck     atomic.Bool
	lastDigestCheck time.Time

	// futuresMu lets Close wait until Raft has answered every future this
	// group started (proposals, leadership checks, membership changes):
	// Raft leaves some unanswered at shutdown (checks still queued, commands
	// handed to the state machine but not yet applied), which would strand
	// their waiters. Each holds the read lock until answered.
	futuresMu sync.RWMutex
	closing   bool

	// outbox is the delivery worker of a data group (nil for the meta group).
	outbox *outbox.Outbox
	// copier makes the record copies of a data group's writes (nil for the
	// meta group).
	copier *copier.Copier
	// appends gathers the appends that arrive together into one entry.
	appends *batch.Batcher[*fsmpb.Append, fsm.AppendResult]
	// ctx ends when Close starts, stopping the group's background work.
	ctx    context.Context
	cancel context.CancelFunc

	notifyCh  chan bool
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// groupDir is where a group keeps its own files (snapshots; for the meta
// group also its Raft log).
func groupDir(dataDir string, id shard.GroupID) string {
	if id == shard.MetaGroup {
		return filepath.Join(dataDir, "meta")
	}
	return filepath.Join(dataDir, "groups", strconv.FormatUint(uint64(id), 10))
}

// openGroup starts a group. With bootstrap and no Raft state on disk it
// first creates the group with this node as its only voter.
func (n *Node) openGroup(id shard.GroupID, bootstrap bool, onReady func(*Group)) (*Group, error) {
	g := &Group{
		id:       id,
		node:     n,
		log:      n.log.With("group", uint64(id)),
		dir:      groupDir(n.cfg.DataDir, id),
		onReady:  onReady,
		notifyCh: make(chan bool, leaderNotifyBacklog),
		stop:     make(chan struct{}),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	// The first replica digest check comes one interval after the group
	// opens, not at once on every leadership change.
	g.lastDigestCheck = time.Now()
	if id != shard.MetaGroup {
		g.outbox = newGroupOutbox(g)
		g.copier = newGroupCopier(g)
	}
	var err error
	if g.appends, err = newAppendBatcher(g); err != nil {
		g.cancel()
		return nil, fmt.Errorf("node: group %d: %w", id, err)
	}
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		g.cancel()
		return nil, fmt.Errorf("node: group %d dir: %w", id, err)
	}
	if err := g.open(bootstrap); err != nil {
		g.cancel()
		g.closeStores()
		return nil, fmt.Errorf("node: group %d: %w", id, err)
	}
	g.wg.Add(1)
	go g.watchLeadership()
	if g.outbox != nil {
		g.wg.Go(func() { g.outbox.Run(g.ctx) })
		g.wg.Go(func() { g.retentionLoop(g.ctx) })
		g.wg.Go(func() { g.compactionLoop(g.ctx) })
		g.wg.Go(func() { g.touchLoop(g.ctx) })
		g.wg.Go(func() { g.copier.Run(g.ctx) })
	}
	return g, nil
}

func (g *Group) open(bootstrap bool) error {
	cfg := g.node.cfg
	st, err := g.node.storage.State(uint64(g.id))
	if err != nil {
		return err
	}
	g.fsm, err = fsm.Open(fsm.Options{
		State:     st,
		Logger:    g.log,
		OnApply:   g.applied,
		OnRestore: g.node.hub.PublishAll,
		OnCorrupt: g.fence,
	})
	if err != nil {
		return err
	}
	var logStore raft.LogStore
	var stable raft.StableStore
	if g.id == shard.MetaGroup {
		g.metaLog, err = raftboltdb.New(raftboltdb.Options{
			Path: filepath.Join(g.dir, "raft.db"),
			BoltOptions: &bolt.Options{
				Timeout:        5 * time.Second,
				FreelistType:   bolt.FreelistMapType,
				NoFreelistSync: true,
			},
		})
		if err != nil {
			return fmt.Errorf("raft log: %w", err)
		}
		counted := countedMetaStore{BoltStore: g.metaLog, fsyncs: &g.node.metaFsyncs}
		logStore, stable = counted, counted
	} else {
		l, err := g.node.storage.Log(uint64(g.id))
		if err != nil {
			return err
		}
		logStore, stable = l, l
		g.snapTuner = &snapshotTuner{floor: cfg.SnapshotThreshold, entryBytes: l.RecentEntryBytes}
	}
	hlog := logbridge.Hclog(g.log, "raft")
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(g.dir, snapshotsRetained, hlog)
	if err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	var snaps raft.SnapshotStore = fileSnaps
	if g.snapTuner != nil {
		snaps = &sizedSnapshots{SnapshotStore: fileSnaps, onSize: g.snapTuner.observe}
	}
	if err := restoreNewerSnapshot(g.fsm, snaps, g.log); err != nil {
		return err
	}
	if last, err := logStore.LastIndex(); err == nil && last > g.fsm.AppliedIndex() {
		// Raft applies what is committed past the state once it learns the
		// commit index (at once for a lone voter, else from the leader).
		g.log.Info("the state is behind the log: replaying it", "state_applied", g.fsm.AppliedIndex(), "log_last", last)
	}
	stream, err := g.node.mux.Layer(uint64(g.id))
	if err != nil {
		return err
	}
	g.netTrans = raft.NewNetworkTransportWithLogger(stream, transportMaxPool, transportTimeout, hlog)
	var inner commitclamp.Inner = g.netTrans
	if g.node.heartbeats != nil {
		g.heartbeats = heartbeat.Wrap(g.netTrans, uint64(g.id), g.node.heartbeats)
		inner = g.heartbeats
	}
	g.transport = commitclamp.Wrap(inner)
	logs, err := raft.NewLogCache(raftLogCacheSize, logStore)
	if err != nil {
		return fmt.Errorf("log cache: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	if cfg.CommitTimeout > 0 {
		rc.CommitTimeout = cfg.CommitTimeout
	}
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	if g.snapTuner != nil {
		rc.SnapshotThreshold = g.snapTuner.initial(snaps)
	}
	rc.TrailingLogs = cfg.TrailingLogs
	// A buffered apply channel: proposers hand over without waiting for the
	// leader loop, which takes up to MaxAppendEntries of them per log write.
	// A future still queued when Raft shuts down would never be answered
	// (hashicorp/raft sets no shutdown channel on apply futures), so Close
	// first waits, with Raft still running, until every future this group
	// started is answered (futuresMu): a running Raft answers a queued one
	// as leader, or with ErrNotLeader as follower or candidate.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = maxAppendEntries
	// The state survives restarts with its applied index (a state the engine
	// set aside restarts empty: restoreNewerSnapshot brings it to the newest
	// snapshot); restoring the last snapshot at start would only rewind it.
	rc.NoSnapshotRestoreOnStart = true
	rc.NotifyCh = g.notifyCh
	rc.Logger = hlog

	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fmt.Errorf("check existing state: %w", err)
	}
	g.hadState = existing
	if bootstrap {
		if !existing {
			err := raft.BootstrapCluster(rc, logs, stable, snaps, g.transport, raft.Configuration{Servers: []raft.Server{
				{ID: rc.LocalID, Address: g.transport.LocalAddr(), Suffrage: raft.Voter},
			}})
			if err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			g.log.Info("bootstrapped a new group")
		}
	}
	g.raft, err = raft.NewRaft(rc, g.fsm, logs, stable, snaps, g.transport)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	if g.snapTuner != nil {
		g.snapTuner.raft.Store(g.raft)
	}
	return nil
}

// restoreNewerSnapshot brings the state up to the newest snapshot when that
// snapshot holds more. Raft starts (NoSnapshotRestoreOnStart) as if the
// newest snapshot were applied, and replays only the entries after it, so
// a state left behind it would silently miss the entries in between: after
// an installed snapshot whose restore failed, or a crash between the
// snapshot reaching the store and its restore finishing.
func restoreNewerSnapshot(f *fsm.FSM, snaps raft.SnapshotStore, log *slog.Logger) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) == 0 || metas[0].Index <= f.AppliedIndex() {
		return nil
	}
	newest := metas[0]
	_, rc, err := snaps.Open(newest.ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", newest.ID, err)
	}
	state := f.AppliedIndex()
	restored, err := f.RestoreIfNewer(rc)
	if err != nil {
		return fmt.Errorf("the state (applied %d) is behind snapshot %s (index %d), which does not restore: %w", state, newest.ID, newest.Index, err)
	}
	if restored {
		log.Warn("the state was behind the newest snapshot: restored it", "state_applied", state, "snapshot", newest.ID, "snapshot_index", newest.Index)
	}
	return nil
}

// Close shuts the group down: Raft first (so nothing more is applied), then
// the transport and the stores. Safe to call more than once.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		g.cancel()
		// Queued appends are answered "closed"; batches in Raft are
		// answered by it (below, or as it shuts down).
		g.appends.Close()
		g.futuresMu.Lock()
		g.closing = true
		g.futuresMu.Unlock()
		if t := g.heartbeats; t != nil {
			t.Detach()
		}
		var errs []error
		if g.raft != nil {
			if err := g.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
			}
		}
		close(g.stop)
		g.wg.Wait()
		errs = append(errs, g.closeStores())
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

func (g *Group) closeStores() error {
	var errs []error
	if g.transport != nil {
		g.netTrans.CloseStreams()
		errs = append(errs, g.transport.(raft.WithClose).Close())
	}
	if g.metaLog != nil {
		errs = append(errs, g.metaLog.Close())
	}
	if g.fsm != nil {
		errs = append(errs, g.fsm.Close())
	}
	return errors.Join(errs...)
}

// applied runs after each batch the state machine applied: it wakes the
// watchers of timelines that grew and the outbox worker. It must not block.
func (g *Group) applied(ch fsm.Changes) {
	if len(ch.Heads) > 0 {
		g.node.hub.Publish(ch.Heads)
	}
	if len(ch.Collections) > 0 {
		g.node.hub.Publish(ch.Collections) // Subscribe streams follow collections by name too
	}
	if ch.Outbox && g.outbox != nil {
		g.outbox.Poke()
	}
	if ch.Copies && g.copier != nil {
		g.copier.Poke()
	}
}

// ID is the group's id.
func (g *Group) ID() shard.GroupID { return g.id }

// IsLeader reports whether this replica leads the group.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// isReadyLeader reports whether this replica leads and has applied every
// entry of earlier terms.
func (g *Group) isReadyLeader() bool {
	return g.IsLeader() && g.readyTerm.Load() == g.raft.CurrentTerm() && g.fenced.Load() == nil
}

// Leader returns the group's leader id and gRPC address as far as this
// replica knows; empty strings during an election.
func (g *Group) Leader() (id, grpcAddr string) {
	_, lid := g.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	return string(lid), g.node.grpcAddrOf(string(lid))
}

func (g *Group) notLeader() error {
	id, addr := g.Leader()
	if id == g.node.cfg.NodeID {
		id, addr = "", "" // we led a moment ago: the next leader is unknown
	}
	return &NotLeaderError{Group: g.id, LeaderID: id, LeaderGRPCAddr: addr}
}

// watchLeadership marks the replica ready for linearizable reads once, as a
// new leader, it has applied everything committed before its term.
func (g *Group) watchLeadership() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case isLeader := <-g.notifyCh:
			g.readyTerm.Store(0)
			if isLeader {
				g.becomeReady()
			}
		}
	}
}

func (g *Group) becomeReady() {
	for g.raft.State() == raft.Leader {
		term := g.raft.CurrentTerm()
		ctx, cancel := context.WithTimeout(g.ctx, g.node.cfg.ApplyTimeout)
		err := g.await(ctx, func() raft.Future { return g.raft.Barrier(g.node.cfg.ApplyTimeout) })
		cancel()
		if err == nil && g.raft.CurrentTerm() == term {
			g.readyTerm.Store(term)
			g.log.Info("leader ready", "term", term)
			if g.onReady != nil {
				g.onReady(g)
			}
			return
		}
		if errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, ErrClosed) || g.ctx.Err() != nil {
			return
		}
		select {
		case <-g.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Digest hashes this replica's state (see fsm.FSM.Digest).
func (g *Group) Digest() (string, error) { return g.fsm.Digest() }

// DigestWithIndex is the digest and the applied index of the state it
// hashed, read together.
func (g *Group) DigestWithIndex() (string, uint64, error) { return g.fsm.DigestWithIndex() }

// AppliedIndex is the state machine's applied index.
func (g *Group) AppliedIndex() uint64 { return g.fsm.AppliedIndex() }

// withDefaultTimeout bounds ctx by ApplyTimeout when it has no deadline.
func (g *Group) withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, g.node.cfg.ApplyTimeout)
}

// OwnedRanges returns the slot ranges this replica's state machine was told
// it owns (see fsm.FSM.OwnedRanges).
func (g *Group) OwnedRanges() ([]shard.Range, uint64, bool, error) { return g.fsm.OwnedRanges() }

// RangeDigest hashes this replica's keys of slot ranges (and counts them).
func (g *Group) RangeDigest(ranges []shard.Range) (string, uint64, error) {
	return g.fsm.RangeDigest(ranges)
}

// verifyLeader confirms with a quorum that this replica still leads.
func (g *Group) verifyLeader(ctx context.Context) error {
	if t := g.heartbeats; t != nil {
		defer t.Urgent()() // the verifying heartbeats skip the coalescing window
	}
	return g.await(ctx, func() raft.Future { return g.raft.VerifyLeader() })
}

// await starts a Raft future and waits for its answer, bounded by ctx. The
// read lock of futuresMu is held until Raft answers, not until the caller
// gives up, so Close (which takes the write lock before shutting Raft down)
// waits for it; a running Raft answers every future, at the latest when it
// steps down.
func (g *Group) await(ctx context.Context, start func() raft.Future) error {
	g.futuresMu.RLock()
	if g.closing {
		g.futuresMu.RUnlock()
		return ErrClosed
	}
	f := start()
	done := make(chan error, 1)
	go func() {
		defer g.futuresMu.RUnlock()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitAnswer is await for a caller that waits for Raft's answer however
// long it takes (the latest is when Raft steps down or shuts down).
func (g *Group) awaitAnswer(start func() raft.Future) error {
	g.futuresMu.RLock()
	defer g.futuresMu.RUnlock()
	if g.closing {
		return ErrClosed
	}
	return start().Error()
}
