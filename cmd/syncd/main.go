// Command syncd runs one syncstore node. With no flags it starts a
// single-node cluster with its data in ./syncd-data and gRPC on
// 127.0.0.1:7400. See README.md for a three-node cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/server"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/storage"
)

// joinTimeout bounds how long a new node keeps trying to join.
const joinTimeout = 2 * time.Minute

// drainTimeout bounds how long a stopping node waits for its groups'
// leadership to move elsewhere.
const drainTimeout = 10 * time.Second

// Exit codes: 0 a clean stop (or --help), 1 the node failed, 2 bad usage.
const (
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	err := run(os.Args[1:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp): // the flag package printed the help
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "syncd:", err)
		os.Exit(exitUsage)
	default:
		fmt.Fprintln(os.Stderr, "syncd:", err)
		os.Exit(exitFailed)
	}
}

// usageError is a command line syncd cannot run with.
type usageError struct{ error }

func run(args []string) error {
	cfg := node.DefaultConfig()
	fs := flag.NewFlagSet("syncd", flag.ContinueOnError)
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this node's id, stable across restarts")
	fs.StringVar(&cfg.DataDir, "data-dir", "./syncd-data", "directory for the state, Raft log and snapshots")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "gRPC listen address, also what clients and peers are told")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "Raft listen address (all groups share it), also what peers are told")
	fs.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "memberlist address (TCP and UDP), also what peers are told")
	bootstrap := fs.Bool("bootstrap", true, "start a new cluster if the data dir is empty (ignored with --join)")
	fs.IntVar(&cfg.Shards, "shards", cfg.Shards, "data groups of a new cluster (used with --bootstrap)")
	join := fs.String("join", "", "join the cluster through this member's gRPC address")
	fs.IntVar(&cfg.MaxPayloadBytes, "max-payload-bytes", cfg.MaxPayloadBytes, "largest payload an append may carry")
	fs.IntVar(&cfg.MaxPageSize, "max-page-size", cfg.MaxPageSize, "largest limit a pull may ask for")
	fs.DurationVar(&cfg.DedupeWindow, "dedupe-window", cfg.DedupeWindow, "how long an idempotency key is remembered")
	fs.IntVar(&cfg.LightAbove, "light-above", cfg.LightAbove, "a send to more members than this writes light entries (no payload) into member timelines")
	fs.DurationVar(&cfg.UserRetention.MaxAge, "user-retention", cfg.UserRetention.MaxAge, "how long user timeline entries are kept (0: forever)")
	fs.Uint64Var(&cfg.UserRetention.MaxEntries, "user-retention-entries", cfg.UserRetention.MaxEntries, "how many of the newest entries a user timeline keeps (0: no limit)")
	fs.DurationVar(&cfg.ConversationRetention.MaxAge, "conversation-retention", cfg.ConversationRetention.MaxAge, "how long conversation entries are kept (0: forever)")
	fs.Uint64Var(&cfg.ConversationRetention.MaxEntries, "conversation-retention-entries", cfg.ConversationRetention.MaxEntries, "how many of the newest entries a conversation keeps (0: no limit)")
	fs.DurationVar(&cfg.RetentionInterval, "retention-interval", cfg.RetentionInterval, "how often group leaders trim by the retention settings")
	fs.DurationVar(&cfg.TombstoneMaxAge, "tombstone-max-age", cfg.TombstoneMaxAge, "compact collection tombstones older than this (0: any age); a device that synced longer ago reads the collection whole")
	fs.Uint64Var(&cfg.TombstoneKeep, "tombstone-keep", cfg.TombstoneKeep, "tombstones a collection keeps at most (0: no count limit)")
	fs.DurationVar(&cfg.TombstoneCompactEvery, "tombstone-compact-every", cfg.TombstoneCompactEvery, "how often group leaders compact collection tombstones")
	deviceClasses := fs.String("device-classes", strings.Join(cfg.DeviceClasses, ","), "the device classes Login accepts, comma-separated")
	fs.StringVar(&cfg.LoginPolicy, "login-policy", cfg.LoginPolicy, "which sessions a login ends: all, one-per-class, one-device, one-mobile-one-pc-web-free, or a mapping group=class+class:limit,... (limit 0: none)")
	fs.BoolVar(&cfg.CursorRetention, "cursor-retention", cfg.CursorRetention, "do not trim a user timeline past the lowest cursor of the user's active devices (up to the cap)")
	fs.DurationVar(&cfg.CursorRetentionCap.MaxAge, "cursor-retention-cap", 0, "the oldest entry device cursors may keep (0: twice --user-retention)")
	fs.Uint64Var(&cfg.CursorRetentionCap.MaxEntries, "cursor-retention-cap-entries", 0, "the most entries device cursors may keep (0: twice --user-retention-entries)")
	fs.DurationVar(&cfg.DeviceTouchEvery, "device-touch-every", cfg.DeviceTouchEvery, "how often at most a device's last-seen time is proposed")
	fs.DurationVar(&cfg.DeviceInactiveAfter, "device-inactive-after", cfg.DeviceInactiveAfter, "a device not seen for this long no longer holds retention back (0: never inactive)")
	fs.Uint64Var(&cfg.DiskReserveBytes, "disk-reserve-bytes", cfg.DiskReserveBytes, "with less free space on the data dir's disk, writes are refused (RESOURCE_EXHAUSTED) and reads go on (0: no check)")
	fs.DurationVar(&cfg.DeadNodeTimeout, "dead-node-timeout", 0, "the meta leader removes a node that gossip has not seen alive for this long as dead (its replicas rebuilt from the others; refused, and logged, when a group would lose its quorum or last copy); 0: never")
	fs.BoolVar(&cfg.CoalesceHeartbeats, "coalesce-heartbeats", cfg.CoalesceHeartbeats, "send the Raft heartbeats of all groups to a node as one message")
	fs.DurationVar(&cfg.DigestCheckInterval, "digest-check-interval", cfg.DigestCheckInterval, "how often each group's leader compares its replicas' state digests at one log index (0: never; each check reads every replica's whole state)")
	fs.DurationVar(&cfg.StateLinger, "state-linger", storage.DefaultStateLinger, "how long the state's transaction of applies gathers more before its (unsynced) commit; reads commit it at once")
	fs.Int64Var(&cfg.WALSegmentBytes, "wal-segment-bytes", storage.DefaultWALSegmentBytes, "size of the storage engine's preallocated log segments")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text (logfmt) or json")
	debugAddr := fs.String("debug-addr", "", "serve /metrics (Prometheus) and /debug/pprof here; off when empty")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err} // the flag package printed it with the usage
	}
	if fs.NArg() > 0 {
		// "syncd version" must not bootstrap a node in ./syncd-data.
		return usageError{fmt.Errorf("unexpected argument %q: syncd takes flags only (see syncd --help)", fs.Arg(0))}
	}
	cfg.DeviceClasses = strings.Split(*deviceClasses, ",")
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch *logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	default:
		return usageError{fmt.Errorf("--log-format %q: text or json", *logFormat)}
	}
	cfg.Bootstrap = *bootstrap && *join == ""

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	cfg.GRPCAddr = lis.Addr().String() // resolves a ":0" port
	peerClient := server.NewPeerClient(nil)
	defer peerClient.Close()
	cfg.Prober = peerClient.Probe
	cfg.StatusFetcher = peerClient.Status
	cfg.Deliverer = peerClient.Deliver
	cfg.Copier = peerClient.Copy
	cfg.DigestProber = peerClient.DigestAt
	cfg.Fencer = peerClient.Fence
	cfg.MoveStepper = peerClient.MoveStep
	nd, err := node.Start(cfg)
	if err != nil {
		lis.Close()
		return err
	}
	srv := server.New(nd, cfg.Logger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	if *debugAddr != "" {
		dbg, err := startDebug(*debugAddr, nd, srv, cfg.Logger)
		if err != nil {
			srv.Stop()
			return errors.Join(err, nd.Close())
		}
		defer dbg.Close()
	}
	cfg.Logger.Info("syncd listening", "node", cfg.NodeID, "grpc", lis.Addr().String(),
		"raft", nd.Config().RaftAddr, "gossip", nd.Config().GossipAddr, "data_dir", cfg.DataDir, "bootstrap", cfg.Bootstrap)

	if *join != "" {
		if err := joinCluster(ctx, *join, nd); err != nil {
			cfg.Logger.Error("join failed", "err", err)
			srv.Stop()
			return errors.Join(err, nd.Close())
		}
		cfg.Logger.Info("joined the cluster", "through", *join)
	}

	select {
	case <-ctx.Done():
		cfg.Logger.Info("shutting down: handing leadership over")
		dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		if err := nd.Drain(dctx); err != nil {
			cfg.Logger.Warn("drain", "err", err)
		}
		cancel()
	case err := <-served:
		cfg.Logger.Error("gRPC server stopped", "err", err)
	case <-nd.Removed():
		cfg.Logger.Warn("this node was removed from the cluster (syncctl node remove): stopping; its data dir is marked and refused at start, wipe it to join again under this id",
			"node", cfg.NodeID, "data_dir", cfg.DataDir)
	}
	srv.Stop()
	if err := nd.Close(); err != nil {
		return fmt.Errorf("close node: %w", err)
	}
	cfg.Logger.Info("stopped")
	return nil
}

// joinCluster asks the cluster (through any member) to add this node, and
// retries until it is a voter or joinTimeout passes.
func joinCluster(ctx context.Context, through string, nd *node.Node) error {
	cl, err := client.New([]string{through}, client.Options{AttemptTimeout: joinTimeout})
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	cfg := nd.Config()
	return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		_, err := a.Join(ctx, &syncv1.JoinRequest{NodeId: cfg.NodeID, RaftAddr: cfg.RaftAddr, GrpcAddr: cfg.GRPCAddr, GossipAddr: cfg.GossipAddr})
		return err
	})
}
