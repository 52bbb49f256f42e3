package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/node/loginpolicy"
	"github.com/syncstore/syncstore/shard"
)

// Defaults for Config.
const (
	// DefaultMaxPayloadBytes is the largest payload an Append may carry.
	DefaultMaxPayloadBytes = 1 << 20
	// DefaultDiskReserveBytes is the free space under which a node
	// refuses writes.
	DefaultDiskReserveBytes = 256 << 20
	// DefaultDigestCheckInterval is how often a group's replicas are
	// compared.
	DefaultDigestCheckInterval = 10 * time.Minute
	// DefaultMaxPageSize is the largest limit a Pull may ask for.
	DefaultMaxPageSize = 1000
	// DefaultPageSize is the page a read with limit 0 gets (proto3's unset
	// field), at most the node's max page size.
	DefaultPageSize = 100
	// DefaultMaxPageBytes bounds the payload bytes of one Pull page (a page
	// always holds at least one entry).
	DefaultMaxPageBytes = 4 << 20
	// DefaultShards is the number of data groups of a new cluster.
	DefaultShards = 8
	// DefaultDedupeWindow is how long an idempotency key is remembered.
	DefaultDedupeWindow = 24 * time.Hour
	// DefaultLightAbove: a Send to more members than this (sender included)
	// writes light entries (no payload) into member timelines.
	DefaultLightAbove = 500
	// DefaultRetentionAge is how long entries of either class are kept.
	DefaultRetentionAge = 90 * 24 * time.Hour
	// DefaultRetentionInterval is how often a group leader looks for
	// entries to trim.
	DefaultRetentionInterval = time.Minute
	// DefaultTombstoneMaxAge is how long a collection's tombstones are kept:
	// a device that last synced longer ago than this reads the collection
	// whole (RESET).
	DefaultTombstoneMaxAge = 30 * 24 * time.Hour
	// DefaultTombstoneKeep is how many tombstones a collection keeps at most.
	DefaultTombstoneKeep = 10000
	// DefaultTombstoneCompactEvery is how often a group leader compacts.
	DefaultTombstoneCompactEvery = time.Minute
	// DefaultDeviceInactiveAfter is how long a device may go unseen before
	// it no longer holds its user's timeline back from retention.
	DefaultDeviceInactiveAfter = 14 * 24 * time.Hour
	// DefaultDeviceTouchEvery is how often at most a device's last-seen
	// time is proposed.
	DefaultDeviceTouchEvery = time.Minute
)

// PeerTLS is the TLS of the Raft port: Server for accepted connections,
// Client for dialed ones (internal/certs builds both; they read reloaded
// certificates at each handshake).
type PeerTLS struct {
	Server, Client *tls.Config
}

// Config configures one node.
type Config struct {
	// NodeID names this node in the Raft configuration; stable across restarts.
	NodeID string
	// DataDir holds the node's storage engine, Raft logs and snapshots (see
	// dataDirLayout).
	DataDir string
	// RaftAddr is the address the Raft transport listens on and advertises.
	RaftAddr string
	// GRPCAddr is the gRPC address other nodes and clients reach this node at;
	// it is recorded in the replicated node registry.
	GRPCAddr string
	// GossipAddr is where memberlist listens (TCP and UDP) and what it
	// advertises; port 0 picks one.
	GossipAddr string
	// GossipProbeInterval is memberlist's failure-detection probe interval.
	GossipProbeInterval time.Duration
	// GossipKeys encrypt and authenticate gossip (AES keys of 16, 24 or 32
	// bytes): the first encrypts, every one decrypts, so a new key can be
	// rolled in (see SetGossipKeys). Empty: plaintext gossip.
	GossipKeys [][]byte
	// PeerTLS makes the Raft port mutual TLS; nil: plaintext.
	PeerTLS *PeerTLS
	// Bootstrap starts a new cluster with this node as its only voter when the
	// data dir holds no Raft state yet; ignored otherwise.
	Bootstrap bool
	// RestoreFrom, if set, is a backup file (syncctl backup) to boot a new
	// cluster from, with this node as its only member: it needs Bootstrap
	// and an empty data dir (restore.go).
	RestoreFrom string
	// Shards is how many data groups a new cluster's first shard map has.
	Shards int
	// ReconcileInterval is how often the node drives itself toward the map.
	ReconcileInterval time.Duration
	// CatchUpLag is how many entries behind the leader's commit index a
	// replica may be and still count as caught up (for promotion and for
	// taking leadership).
	CatchUpLag uint64
	// Prober lets the reconciler ask peers how far they have applied.
	Prober Prober
	// StatusFetcher lets the meta leader ask peers for their groups'
	// configurations (node removal); nil: removals wait for ever and a
	// dead removal is refused as if no replica answered.
	StatusFetcher StatusFetcher
	// DeadNodeTimeout: the meta leader declares an active node dead (as
	// syncctl node remove --dead would, with the same refusals) once gossip
	// has not seen it alive for this long. 0 turns it off.
	DeadNodeTimeout time.Duration
	// Deliverer carries conversation deliveries to the leader of a group on
	// any node; nil delivers only to groups this node leads (one node).
	Deliverer Deliverer
	// Copier carries record copies to the leader of a group on another
	// node.
	Copier Copier
	// DigestProber and Fencer let a group's leader compare its replicas'
	// digests at a digest point and fence one that diverged; nil: the
	// leader compares nothing.
	DigestProber DigestProber
	Fencer       Fencer
	// MoveStepper carries slot-move steps to the leader of a group on
	// another node (the rpc layer's Peer.Move client).
	MoveStepper MoveStepper
	// DigestCheckInterval is how often each group's leader has its replicas
	// hash their state at one log index and compares them (0: never). Each
	// check reads every replica's whole state.
	DigestCheckInterval time.Duration
	// LightAbove: Sends to more members than this write light entries.
	LightAbove int
	// Retention per timeline class; zero fields keep forever.
	UserRetention, ConversationRetention Retention
	// RetentionInterval is how often a group leader trims.
	RetentionInterval time.Duration
	// Tombstones of collections older than TombstoneMaxAge (0: any age) or
	// beyond the newest TombstoneKeep of a collection (0: any number) are
	// compacted every TombstoneCompactEvery.
	TombstoneMaxAge       time.Duration
	TombstoneKeep         uint64
	TombstoneCompactEvery time.Duration
	// DeviceClasses are the device classes Login accepts; LoginPolicy
	// maps them to class groups with session limits (a preset of
	// node/loginpolicy or a custom mapping).
	DeviceClasses []string
	LoginPolicy   string
	// CursorRetention: a user timeline is not trimmed past the lowest
	// cursor of the user's active devices, up to CursorRetentionCap (zero
	// fields: twice UserRetention's), unless turned off. A device not seen
	// for DeviceInactiveAfter holds nothing back.
	CursorRetention     bool
	CursorRetentionCap  Retention
	DeviceInactiveAfter time.Duration
	// DeviceTouchEvery is how often at most a device's last-seen time is
	// proposed (never per request).
	DeviceTouchEvery time.Duration
	// StateMmapBytes is the initial mmap size of the node's state file
	// (address space, not memory): a snapshot's long read blocks the
	// node's writes only when the file outgrows it (bbolt remaps under a
	// lock that waits for every open read). Like etcd's 10 GiB, it is far
	// above the data: a slot move holds a range twice on a node for a
	// while, and a 1 GiB move under a 1 GiB map stalled every group of a
	// node for seconds (scripts/bench-move.sh).
	StateMmapBytes int
	// StateCheckpointInterval is how often the state file, which is not
	// fsynced per commit, is fsynced and marked clean.
	StateCheckpointInterval time.Duration
	// DiskReserveBytes: with less free space than this on the data dir's
	// disk, the node refuses writes (RESOURCE_EXHAUSTED) and keeps serving
	// reads, until space is freed. 0 turns the check off.
	DiskReserveBytes uint64
	// WALSegmentBytes is the size of the storage engine's log segments
	// (storage.DefaultWALSegmentBytes when zero).
	WALSegmentBytes int64
	// StateLinger is how long the state's open transaction, holding only
	// applies nobody waits for, gathers more before it is committed
	// (storage.DefaultStateLinger when zero).
	StateLinger time.Duration

	MaxPayloadBytes int
	// MoveChunkBytes bounds one chunk of a slot move (mover.DefaultConfig's
	// when zero; at most MaxPayloadBytes).
	MoveChunkBytes int
	// OnMoveChunk, if set, is called by this node's mover after each chunk
	// a move's target imported (a test seam, like the Prober).
	OnMoveChunk  func(id uint64, fenced bool, st *fsmpb.MoveImportState)
	MaxPageSize  int
	MaxPageBytes int
	DedupeWindow time.Duration
	// ApplyTimeout bounds a write or read barrier when the caller's context
	// has no deadline.
	ApplyTimeout time.Duration

	// Raft timing and log compaction.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long a leader with nothing new to send waits
	// before telling its followers the commit index anyway. Each group's
	// leader does so to each follower, so at hashicorp/raft's 50 ms a node
	// idling with 64 groups spent most of a core on it; followers serve no
	// reads, so they may learn of commits later.
	CommitTimeout time.Duration
	// CoalesceHeartbeats sends the Raft heartbeats of all the groups this
	// node leads to one node as one message (node/heartbeat) instead of an
	// RPC per group.
	CoalesceHeartbeats bool
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64

	// Clock gives the time proposed with each command; injected for tests.
	Clock  func() time.Time
	Logger *slog.Logger
}

// Retention bounds how much of a timeline is kept: entries older than
// MaxAge, and all but the newest MaxEntries, are trimmed. Zero: no bound.
type Retention struct {
	MaxAge     time.Duration
	MaxEntries uint64
}

// DefaultConfig returns a Config for a single local node with production
// timings; callers set NodeID, DataDir and addresses.
func DefaultConfig() Config {
	return Config{
		NodeID:                "node1",
		DataDir:               "syncd-data",
		RaftAddr:              "127.0.0.1:7401",
		GRPCAddr:              "127.0.0.1:7400",
		GossipAddr:            "127.0.0.1:7402",
		GossipProbeInterval:   time.Second,
		MaxPayloadBytes:       DefaultMaxPayloadBytes,
		Shards:                DefaultShards,
		ReconcileInterval:     500 * time.Millisecond,
		CatchUpLag:            256,
		StateMmapBytes:        16 << 30,
		DiskReserveBytes:      DefaultDiskReserveBytes,
		MaxPageSize:           DefaultMaxPageSize,
		MaxPageBytes:          DefaultMaxPageBytes,
		DedupeWindow:          DefaultDedupeWindow,
		LightAbove:            DefaultLightAbove,
		UserRetention:         Retention{MaxAge: DefaultRetentionAge},
		ConversationRetention: Retention{MaxAge: DefaultRetentionAge},
		RetentionInterval:     DefaultRetentionInterval,
		TombstoneMaxAge:       DefaultTombstoneMaxAge,
		TombstoneKeep:         DefaultTombstoneKeep,
		TombstoneCompactEvery: DefaultTombstoneCompactEvery,
		DeviceClasses:         loginpolicy.DefaultClasses,
		LoginPolicy:           loginpolicy.Default,
		CursorRetention:       true,
		DeviceInactiveAfter:   DefaultDeviceInactiveAfter,
		DeviceTouchEvery:      DefaultDeviceTouchEvery,
		ApplyTimeout:          10 * time.Second,
		HeartbeatTimeout:      time.Second,
		ElectionTimeout:       time.Second,
		LeaderLeaseTimeout:    500 * time.Millisecond,
		CommitTimeout:         500 * time.Millisecond,
		CoalesceHeartbeats:    true,
		DigestCheckInterval:   DefaultDigestCheckInterval,
		SnapshotInterval:      2 * time.Minute,
		SnapshotThreshold:     8192,
		TrailingLogs:          10240,
		Clock:                 time.Now,
		Logger:                slog.Default(),
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	var errs []error
	if err := fsm.ValidateNodeID(c.NodeID); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if c.RestoreFrom != "" && !c.Bootstrap {
		errs = append(errs, errors.New("a restore boots a new cluster: it needs Bootstrap"))
	}
	for _, a := range []struct{ what, addr string }{{"raft address", c.RaftAddr}, {"gRPC address", c.GRPCAddr}, {"gossip address", c.GossipAddr}} {
		if err := validateListenAddr(a.what, a.addr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.GossipProbeInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("gossip probe interval %s must be at least 10ms", c.GossipProbeInterval))
	}
	if c.MaxPayloadBytes < 1 || c.MaxPayloadBytes > fsm.MaxPayloadBytes {
		errs = append(errs, fmt.Errorf("max payload %d must be within 1..%d", c.MaxPayloadBytes, fsm.MaxPayloadBytes))
	}
	if c.MaxPageSize < 1 || c.MaxPageBytes < 1 {
		errs = append(errs, fmt.Errorf("max page size %d and page bytes %d must be at least 1", c.MaxPageSize, c.MaxPageBytes))
	}
	if c.DedupeWindow < time.Millisecond {
		errs = append(errs, fmt.Errorf("dedupe window %s must be at least 1ms", c.DedupeWindow))
	}
	if c.ApplyTimeout <= 0 || c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 {
		errs = append(errs, errors.New("timeouts must be positive"))
	}
	if c.Shards < 0 || c.Shards > shard.SlotCount {
		errs = append(errs, fmt.Errorf("shards %d must be within 0..%d", c.Shards, shard.SlotCount))
	}
	if c.LightAbove < 1 || c.LightAbove >= fsm.MaxRecipients {
		errs = append(errs, fmt.Errorf("light-above %d must be within 1..%d", c.LightAbove, fsm.MaxRecipients-1))
	}
	if c.TombstoneCompactEvery <= 0 || c.TombstoneMaxAge < 0 {
		errs = append(errs, errors.New("tombstone compaction interval must be positive and the tombstone age not negative"))
	}
	if c.RetentionInterval <= 0 {
		errs = append(errs, errors.New("retention interval must be positive"))
	}
	if c.UserRetention.MaxAge < 0 || c.ConversationRetention.MaxAge < 0 {
		errs = append(errs, errors.New("retention ages must not be negative"))
	}
	if _, err := loginpolicy.Parse(c.LoginPolicy, c.DeviceClasses); err != nil {
		errs = append(errs, err)
	}
	if c.DeviceInactiveAfter < 0 || c.DeviceTouchEvery <= 0 || c.CursorRetentionCap.MaxAge < 0 {
		errs = append(errs, errors.New("device inactivity and the cursor retention cap must not be negative, the touch interval positive"))
	}
	if c.DeadNodeTimeout < 0 {
		errs = append(errs, errors.New("dead node timeout must not be negative"))
	}
	if c.ReconcileInterval <= 0 {
		errs = append(errs, errors.New("reconcile interval must be positive"))
	}
	if c.Clock == nil || c.Logger == nil {
		errs = append(errs, errors.New("clock and logger are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: invalid config: %w", err)
	}
	return nil
}

// validateListenAddr checks an address this node listens on and tells its
// peers: what fsm.ValidateAddr accepts, except that port 0 (pick a free
// port, resolved before it is advertised) is allowed.
func validateListenAddr(what, addr string) error {
	if host, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		addr = net.JoinHostPort(host, "1")
	}
	return fsm.ValidateAddr(what, addr)
}
