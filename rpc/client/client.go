// Package client is the Go client of syncstore. It sends each request to the
// node it believes leads, follows NotLeader answers to the leader, and
// retries transient failures (with backoff) until the caller's context ends.
// Appends are retried with the same idempotency key, so a retry never adds a
// second entry.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Options tune a Client.
type Options struct {
	// AttemptTimeout bounds one attempt, so a hung node costs one attempt and
	// not the whole call.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts.
	MinBackoff, MaxBackoff time.Duration
	// MaxRecvBytes bounds one response (a Pull page).
	MaxRecvBytes int
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

// ErrNoAddresses is returned by New without any address.
var ErrNoAddresses = errors.New("client: no node addresses")

// Client talks to one syncstore cluster. It is safe for concurrent use.
type Client struct {
	opts Options

	mu     sync.Mutex
	seeds  []string
	next   int    // seed to try when no leader is known
	leader string // address of the node believed to lead
	conns  map[string]*grpc.ClientConn
}

// New returns a client for the cluster reachable at any of addrs. It dials
// lazily: New does no network I/O.
func New(addrs []string, opts Options) (*Client, error) {
	if len(addrs) == 0 {
		return nil, ErrNoAddresses
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
	return &Client{opts: opts, seeds: append([]string(nil), addrs...), conns: map[string]*grpc.ClientConn{}}, nil
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
	err := c.do(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
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
	err := c.do(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).Pull(ctx, req)
		return err
	})
	return resp, err
}

// Head returns a timeline's newest seq.
func (c *Client) Head(ctx context.Context, timeline string, cons Consistency) (uint64, error) {
	req := &syncv1.HeadRequest{Timeline: proto.String(timeline), Consistency: cons.Enum()}
	var resp *syncv1.HeadResponse
	err := c.do(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = syncv1.NewSyncClient(conn).Head(ctx, req)
		return err
	})
	return resp.GetHeadSeq(), err
}

// Admin runs fn against one node's Admin service with the same routing and
// retries as the data calls.
func (c *Client) Admin(ctx context.Context, fn func(context.Context, syncv1.AdminClient) error) error {
	return c.do(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		return fn(ctx, syncv1.NewAdminClient(conn))
	})
}

// do runs one call with routing and retries.
func (c *Client) do(ctx context.Context, call func(context.Context, *grpc.ClientConn) error) error {
	backoff := c.opts.MinBackoff
	followed := false // a leader hint is followed at once, but not twice running
	var lastErr error // the most telling failure so far, for the caller
	for {
		addr, conn, err := c.target()
		if err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		err = call(actx, conn)
		cancel()
		if err == nil {
			c.setLeader(addr)
			return nil
		}
		st := status.Convert(err)
		if !retryable(st.Code()) {
			return err
		}
		if lastErr == nil || st.Code() != codes.DeadlineExceeded {
			lastErr = err
		}
		if ctx.Err() != nil {
			return giveUp(ctx, lastErr)
		}
		if hint := leaderHint(st); hint != "" && hint != addr {
			c.setLeader(hint)
			if !followed {
				followed = true
				continue
			}
		} else {
			c.forgetLeader(addr)
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

// giveUp wraps both the context's error (for errors.Is) and the last answer
// from the cluster (for status.Code).
func giveUp(ctx context.Context, last error) error {
	return fmt.Errorf("client: %w; last error: %w", ctx.Err(), last)
}

func retryable(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

func leaderHint(st *status.Status) string {
	for _, d := range st.Details() {
		if nl, ok := d.(*syncv1.NotLeader); ok {
			return nl.GetLeaderAddr()
		}
	}
	return ""
}

// target picks the believed leader, else the next seed in turn.
func (c *Client) target() (string, *grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := c.leader
	if addr == "" {
		addr = c.seeds[c.next%len(c.seeds)]
		c.next++
	}
	if conn, ok := c.conns[addr]; ok {
		return addr, conn, nil
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.opts.MaxRecvBytes)),
	)
	if err != nil {
		return "", nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c.conns[addr] = conn
	return addr, conn, nil
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

func (c *Client) forgetLeader(addr string) {
	c.mu.Lock()
	if c.leader == addr {
		c.leader = ""
	}
	c.mu.Unlock()
}

func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "auto-" + hex.EncodeToString(b[:])
}
