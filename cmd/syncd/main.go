// Command syncd runs one syncstore node. With no flags it starts a
// single-node cluster with its data in ./syncd-data and gRPC on
// 127.0.0.1:7400. See README.md for a three-node cluster.
package main

import (
	"context"
	"crypto/tls"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/version"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/server"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/storage"
)

// joinTimeout bounds how long a new node keeps trying to join, and
// joinRetryMin and joinRetryMax its waits between attempts.
const (
	joinTimeout  = 2 * time.Minute
	joinRetryMin = 100 * time.Millisecond
	joinRetryMax = 2 * time.Second
)

// drainTimeout bounds how long a stopping node waits for its groups'
// leadership to move elsewhere.
const drainTimeout = 10 * time.Second

// Exit codes: 0 a clean stop (or --help), 1 the node failed, 2 bad usage.
const (
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	err := run(os.Args[1:], os.Environ())
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

// run is syncd with its command line and environment (SYNCD_* variables).
func run(args, environ []string) error {
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
	fs.StringVar(&cfg.RestoreFrom, "restore", "", "boot a new one-node cluster (new cluster id) from this backup file (syncctl backup) into an empty --data-dir, then serve; other nodes then --join it. Checked whole before anything is written")
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
	var sec securityFlags
	sec.define(fs)
	showVersion := fs.Bool("version", false, "print the build's version and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text (logfmt) or json")
	debugAddr := fs.String("debug-addr", "", "serve /metrics (Prometheus) and /debug/pprof here; off when empty")
	printCfg := addConfigFlags(fs)
	// Flags, then SYNCD_* variables, then --config's file, then defaults.
	settings, err := loadSettings(fs, args, environ, secretFlags)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// "syncd version" must not bootstrap a node in ./syncd-data.
		return usageError{fmt.Errorf("unexpected argument %q: syncd takes flags only (see syncd --help)", fs.Arg(0))}
	}
	if *showVersion {
		fmt.Println(version.Get().String("syncd"))
		return nil
	}
	if *printCfg {
		return printConfig(os.Stdout, fs, secretFlags, settings.source)
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
	for _, w := range settings.warnings {
		cfg.Logger.Warn("config: " + w)
	}
	if settings.configPath != "" {
		cfg.Logger.Info("config file read", "path", settings.configPath)
	}
	cfg.Bootstrap = *bootstrap && *join == ""
	if cfg.RestoreFrom != "" {
		if *join != "" {
			return usageError{errors.New("--restore boots a new cluster: it cannot --join one")}
		}
		cfg.Bootstrap = true
	}
	security, err := sec.load()
	if err != nil {
		return err
	}
	if err := security.exposure(map[string]string{"grpc-addr": cfg.GRPCAddr, "raft-addr": cfg.RaftAddr, "gossip-addr": cfg.GossipAddr, "debug-addr": *debugAddr}); err != nil {
		return err
	}
	if !security.secure() && sec.insecure {
		cfg.Logger.Warn("running with --insecure: without TLS and authentication anyone who reaches this node's ports can read, write and join")
	}
	cfg.PeerTLS = security.peerTLS()
	cfg.GossipKeys = security.gossipKeys

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	cfg.GRPCAddr = lis.Addr().String() // resolves a ":0" port
	var peerClientTLS *tls.Config
	if security.certs != nil {
		peerClientTLS = security.certs.PeerClient()
	}
	peerClient := server.NewPeerClient(peerClientTLS)
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
	authz := security.authorizer()
	srvOpts := []server.Option{server.WithAuthorizer(authz)}
	if security.certs != nil {
		srvOpts = append(srvOpts, server.WithTLS(security.certs))
	}
	srv := server.New(nd, cfg.Logger, srvOpts...)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	if *debugAddr != "" {
		dbg, err := startDebug(*debugAddr, nd, srv, authz, cfg.Logger)
		if err != nil {
			srv.Stop()
			return errors.Join(err, nd.Close())
		}
		defer dbg.Close()
	}
	cfg.Logger.Info("syncd listening", "node", cfg.NodeID, "grpc", lis.Addr().String(),
		"raft", nd.Config().RaftAddr, "gossip", nd.Config().GossipAddr, "data_dir", cfg.DataDir, "bootstrap", cfg.Bootstrap,
		"tls", security.certs != nil, "auth", authz.ClientAuth(), "gossip_encrypted", len(cfg.GossipKeys) > 0)

	// SIGHUP reloads certificates, tokens and the gossip key file.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloading := make(chan struct{})
	defer func() { <-reloading }()
	stopReload := make(chan struct{})
	defer close(stopReload)
	go func() {
		defer close(reloading)
		for {
			select {
			case <-hup:
				security.reload(nd, cfg.Logger)
			case <-stopReload:
				return
			}
		}
	}()

	switch {
	case *join != "" && nd.Restarted():
		cfg.Logger.Info("restarted from the data dir's state: --join ignored, the node rejoins its cluster by itself", "join", *join)
	case *join != "":
		if err := joinCluster(ctx, *join, nd, peerClientTLS); err != nil {
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
	case <-nd.Outdated():
		// A finalize this node applied late: the cluster runs at a version
		// this binary cannot apply. It exits non-zero, and refuses to start
		// again with this binary.
		srv.Stop()
		return errors.Join(nd.OutdatedErr(), nd.Close())
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

// joinCluster asks the cluster (through any member, which forwards to the
// meta leader) to add this node, retrying transient failures until it is a
// voter or joinTimeout passes. A join is a peer's call: with peer TLS it
// presents this node's peer certificate.
func joinCluster(ctx context.Context, through string, nd *node.Node, peerTLS *tls.Config) error {
	creds := insecure.NewCredentials()
	if peerTLS != nil {
		creds = credentials.NewTLS(peerTLS)
	}
	conn, err := grpc.NewClient(through, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("join through %s: %w", through, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	cfg := nd.Config()
	req := &syncv1.JoinRequest{NodeId: cfg.NodeID, RaftAddr: cfg.RaftAddr, GrpcAddr: cfg.GRPCAddr, GossipAddr: cfg.GossipAddr,
		ClusterId: nd.ClusterID()}
	wait := joinRetryMin
	for {
		resp, err := syncv1.NewAdminClient(conn).Join(ctx, req)
		switch status.Code(err) {
		case codes.OK:
			if err := nd.AdoptClusterID(resp.GetClusterId()); err != nil {
				return fmt.Errorf("join through %s: %w", through, err)
			}
			return nil
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
			if st, _ := status.FromError(err); certificateRefused(st.Message()) {
				// Certificates do not get better by waiting.
				return fmt.Errorf("join through %s: TLS handshake refused (is this node's certificate from the cluster's peer CA, and the peer CA the one that signed the cluster's?): %w", through, err)
			}
		default:
			return fmt.Errorf("join through %s: %w", through, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join through %s: gave up after %v: %w", through, joinTimeout, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, joinRetryMax)
	}
}

// certificateRefused reports whether a call failed on the other side's
// verdict on a certificate (or this side's on its), not on a transient
// outage: "remote error: tls: bad certificate", "x509: certificate signed
// by unknown authority".
func certificateRefused(msg string) bool {
	return strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ") || strings.Contains(msg, "certs: ")
}
