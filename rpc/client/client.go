package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// Options tune a Client.
// Zero fields take the DefaultOptions.
type Options struct {
	// AttemptTimeout bounds one attempt (default 3s), so a hung node costs
	// one attempt and not the whole call; the call's deadline is the
	// context's.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts (default
	// 10ms, doubling up to 500ms).
	MinBackoff, MaxBackoff time.Duration
	// MaxRecvBytes bounds one response, such as a Pull page (default 64 MiB).
	MaxRecvBytes int
	// Pinned sends every call to the first address, whatever the shard map
	// says: with Stale reads, what that node's own replica holds (a checker
	// comparing replicas, an operator looking at one node). Writes and
	// linearizable reads are forwarded by that node to the leader.
	Pinned bool

	// TLS, when set, is the TLS config of every connection (LoadTLS builds
	// one from PEM files); nil dials plaintext.
	TLS *tls.Config
	// Token, when set, is sent on every call as the metadata
	// "authorization: Bearer <token>". It needs TLS: New refuses a Token
	// without it, so that a token never crosses the network in the clear.
	Token string
	// FailFast gives a call up as soon as every address it could go to has
	// refused the connection (or failed its name lookup or TLS handshake)
	// since a node last answered it, with an error that names them and
	// matches ErrUnreachable. Without it, such a call is retried until its
	// context ends, which rides out a restart of the whole cluster. For
	// interactive tools (syncctl sets it), not for servers. A Subscription
	// and WatchCollection end on the same condition.
	FailFast bool
	// DialOptions are appended to the client's own (transport credentials
	// from TLS, the token, MaxRecvBytes), so they may override them.
	DialOptions []grpc.DialOption
}

// DefaultOptions are the Options New uses for zero fields.
func DefaultOptions() Options {
	return Options{
		AttemptTimeout: 3 * time.Second,
		MinBackoff:     10 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
		MaxRecvBytes:   64 << 20,
	}
}

// routesRetry is how often a client without a shard map asks for one.
const routesRetry = time.Second

// ErrNoAddresses is returned by New without any address (it matches
// ErrInvalidArgument too).
var ErrNoAddresses = errors.New("client: no node addresses")

// Client talks to one syncstore cluster. It is safe for concurrent use.
type Client struct {
	opts Options

	mu     sync.Mutex
	seeds  []string
	next   int    // seed to try when no leader is known
	leader string // node believed to lead the meta group (Admin calls)
	conns  map[string]*grpc.ClientConn

	// Routing by shard: the map, the node believed to lead each group, and a
	// per-group turn for trying replicas when the leader is unknown.
	routes    *routes
	leaders   map[uint64]string
	turn      map[uint64]int
	lastFetch time.Time
}

// routes is a fetched shard map with its nodes' addresses.
type routes struct {
	m     *shard.Map
	addrs map[string]string
}

// New returns a client for the cluster reachable at any of addrs. It dials
// lazily: New does no network I/O.
func New(addrs []string, opts Options) (*Client, error) {
	if len(addrs) == 0 {
		return nil, &Error{st: status.New(codes.InvalidArgument, ErrNoAddresses.Error()), err: ErrNoAddresses}
	}
	if err := checkSecurity(opts); err != nil {
		return nil, err
	}
	def := DefaultOptions()
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = def.AttemptTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = def.MinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(def.MaxBackoff, opts.MinBackoff)
	}
	if opts.MaxRecvBytes <= 0 {
		opts.MaxRecvBytes = def.MaxRecvBytes
	}
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return nil, err
		}
	}
	return &Client{
		opts:    opts,
		seeds:   append([]string(nil), addrs...),
		conns:   map[string]*grpc.ClientConn{},
		leaders: map[uint64]string{},
		turn:    map[uint64]int{},
	}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

// AppendOptions are the optional parts of an Append.
type AppendOptions struct {
	// IdempotencyKey identifies the append across retries (the caller's own
	// included). When empty, the client makes one up for this call, which
	// protects its internal retries but not a retry by the caller.
	IdempotencyKey string
	Metadata       map[string]string
}

// Append adds an entry to a timeline and returns its seq and timestamp.
func (c *Client) Append(ctx context.Context, timeline string, payload []byte, o AppendOptions) (*syncv1.AppendResponse, error) {
	key := o.IdempotencyKey
	if key == "" {
		key = randomKey()
	}
	req := &syncv1.AppendRequest{Timeline: proto.String(timeline), Payload: payload, IdempotencyKey: proto.String(key), Metadata: o.Metadata}
	var resp *syncv1.AppendResponse
	err := c.do(ctx, timeline, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).Append(ctx, req)
		return err
	})
	return resp, err
}

// Consistency of a read; Linearizable unless Stale is asked for.
type Consistency = syncv1.Consistency

const (
	Linearizable = syncv1.Consistency_CONSISTENCY_LINEARIZABLE
	Stale        = syncv1.Consistency_CONSISTENCY_STALE
)

// Pull reads up to limit entries after afterSeq.
func (c *Client) Pull(ctx context.Context, timeline string, afterSeq uint64, limit uint32, cons Consistency) (*syncv1.PullResponse, error) {
	req := &syncv1.PullRequest{Timeline: proto.String(timeline), AfterSeq: proto.Uint64(afterSeq), Limit: proto.Uint32(limit), Consistency: cons.Enum()}
	var resp *syncv1.PullResponse
	err := c.do(ctx, timeline, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).Pull(ctx, req)
		return err
	})
	return resp, err
}

// Head returns a timeline's newest seq.
func (c *Client) Head(ctx context.Context, timeline string, cons Consistency) (uint64, error) {
	req := &syncv1.HeadRequest{Timeline: proto.String(timeline), Consistency: cons.Enum()}
	var resp *syncv1.HeadResponse
	err := c.do(ctx, timeline, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).Head(ctx, req)
		return err
	})
	return resp.GetHeadSeq(), err
}

// Admin runs fn against one node's Admin service with the same routing and
// retries as the data calls.
func (c *Client) Admin(ctx context.Context, fn func(context.Context, syncv1.AdminClient) error) error {
	return c.do(ctx, "", func(ctx context.Context, conn *grpc.ClientConn) error {
		return fn(ctx, syncv1.NewAdminClient(conn))
	})
}

// do runs one call with routing and retries. A call about a timeline goes
// to the node believed to lead the timeline's group; others (Admin) to the
// node believed to lead the meta group.
func (c *Client) do(ctx context.Context, timeline string, call func(context.Context, *grpc.ClientConn) error) error {
	backoff := c.opts.MinBackoff
	followed := false              // a leader hint is followed at once, but not twice running
	var lastErr error              // the most telling failure so far, for the caller
	refused := map[string]string{} // addresses that refused a connection since a node last answered, and why
	for {
		if timeline != "" {
			c.fetchRoutes(ctx)
		}
		addr, group, conn, err := c.target(timeline)
		if err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		err = call(actx, conn)
		cancel()
		if err == nil {
			c.succeeded(group, addr)
			return nil
		}
		st := status.Convert(err)
		if !retryable(st.Code()) {
			return typed(err)
		}
		if cause, ok := unreachableCause(conn, err); ok {
			refused[addr] = cause
			err = unreachableError(map[string]string{addr: cause})
			if c.opts.FailFast && c.allRefused(timeline, refused) {
				return unreachableError(refused)
			}
		} else {
			clear(refused) // a node answered: the cluster is there, keep trying
		}
		if lastErr == nil || st.Code() != codes.DeadlineExceeded {
			lastErr = err
		}
		if ctx.Err() != nil {
			return giveUp(ctx, lastErr)
		}
		if st.Code() == codes.Aborted {
			c.forgetRoutes() // the group refused the timeline: our map is stale
		}
		if hint := leaderHint(st); hint != nil && hint.GetLeaderAddr() != "" && hint.GetLeaderAddr() != addr {
			c.hinted(timeline, group, hint)
			if !followed {
				followed = true
				continue
			}
		} else {
			c.failed(group, addr)
		}
		followed = false
		select {
		case <-ctx.Done():
			return giveUp(ctx, lastErr)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// giveUp wraps both the context's error and the last answer from the
// cluster (for errors.Is with either, and status.Code).
func giveUp(ctx context.Context, last error) error {
	return fmt.Errorf("client: %w; last error: %w", ctx.Err(), typed(last))
}

func retryable(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

func leaderHint(st *status.Status) *syncv1.NotLeader {
	for _, d := range st.Details() {
		if nl, ok := d.(*syncv1.NotLeader); ok {
			return nl
		}
	}
	return nil
}

// target picks where to send a call: for a timeline, the believed leader of
// its group, else its replicas in turn; otherwise (or before the shard map
// is known) the believed meta leader, else the seeds in turn.
func (c *Client) target(timeline string) (addr string, group uint64, conn *grpc.ClientConn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opts.Pinned {
		conn, err = c.connLocked(c.seeds[0])
		return c.seeds[0], 0, conn, err
	}
	if timeline != "" && c.routes != nil {
		var candidates []string
		group, candidates = c.replicasLocked(timeline)
		addr = c.leaders[group]
		// replicas[0] is the preferred leader, which the cluster hands
		// leadership to: try it first (a follower would forward, at the
		// cost of a hop on every call), the others after failures.
		if addr == "" && len(candidates) > 0 {
			addr = candidates[c.turn[group]%len(candidates)]
		}
	}
	if addr == "" {
		group = 0
		addr = c.leader
		if addr == "" {
			addr = c.seeds[c.next%len(c.seeds)]
			c.next++
		}
	}
	conn, err = c.connLocked(addr)
	return addr, group, conn, err
}

// replicasLocked is the group of timeline in the shard map and the
// addresses of its replicas, preferred leader first.
func (c *Client) replicasLocked(timeline string) (group uint64, addrs []string) {
	group = uint64(c.routes.m.GroupFor(timeline))
	sg, _ := c.routes.m.Group(shard.GroupID(group))
	for _, id := range sg.Replicas {
		if a := c.routes.addrs[id]; a != "" {
			addrs = append(addrs, a)
		}
	}
	return group, addrs
}

func (c *Client) connLocked(addr string) (*grpc.ClientConn, error) {
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpc.NewClient(addr, c.opts.dialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c.conns[addr] = conn
	return conn, nil
}

// succeeded remembers who answered. A group's answer may come from a
// follower that forwarded it, which is still the right place to start.
func (c *Client) succeeded(group uint64, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if group == 0 {
		c.leader = addr
	} else {
		c.leaders[group] = addr
	}
}

// hinted records a NotLeader hint. A hint about another group than the one
// the client computed means its shard map is out of date.
func (c *Client) hinted(timeline string, group uint64, nl *syncv1.NotLeader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case nl.GetGroupId() == 0 || timeline == "":
		c.leader = nl.GetLeaderAddr()
	default:
		c.leaders[nl.GetGroupId()] = nl.GetLeaderAddr()
		if group != 0 && group != nl.GetGroupId() {
			c.routes = nil
		}
	}
}

// failed forgets addr as a leader so the next attempt tries elsewhere.
func (c *Client) failed(group uint64, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if group != 0 && c.leaders[group] == addr {
		delete(c.leaders, group)
	}
	if group != 0 {
		c.turn[group]++
	}
	if c.leader == addr {
		c.leader = ""
	}
}

// forgetRoutes drops the shard map so the next call fetches it again.
func (c *Client) forgetRoutes() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.routes, c.leaders, c.lastFetch = nil, map[uint64]string{}, time.Time{}
}

// fetchRoutes loads the shard map when the client has none, at most once
// per routesRetry. Without a map, calls go through any node, which forwards.
func (c *Client) fetchRoutes(ctx context.Context) {
	c.mu.Lock()
	if c.routes != nil || time.Since(c.lastFetch) < routesRetry {
		c.mu.Unlock()
		return
	}
	c.lastFetch = time.Now()
	c.mu.Unlock()
	var resp *syncv1.ShardMapResponse
	addr, _, conn, err := c.target("")
	if err != nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
	resp, err = syncv1.NewAdminClient(conn).ShardMap(actx, &syncv1.ShardMapRequest{})
	cancel()
	if err != nil || resp.GetVersion() == 0 {
		c.failed(0, addr)
		return
	}
	r, err := routesFrom(resp)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.routes = r
	c.mu.Unlock()
}

func routesFrom(resp *syncv1.ShardMapResponse) (*routes, error) {
	m, err := ShardMap(resp)
	if err != nil {
		return nil, err
	}
	return &routes{m: m, addrs: resp.GetNodeAddrs()}, nil
}

// ShardMap converts an Admin.ShardMap answer into a checked shard.Map.
func ShardMap(resp *syncv1.ShardMapResponse) (*shard.Map, error) {
	groups := make([]shard.Group, 0, len(resp.GetGroups()))
	for _, g := range resp.GetGroups() {
		sg := shard.Group{ID: shard.GroupID(g.GetId()), Replicas: g.GetReplicas(), Pinned: g.GetPinned()}
		for _, r := range g.GetRanges() {
			sg.Ranges = append(sg.Ranges, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
		}
		groups = append(groups, sg)
	}
	return shard.New(resp.GetVersion(), groups)
}

func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "auto-" + hex.EncodeToString(b[:])
}
