package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// BackupGroup streams a group's backup (0: the meta group) from its leader
// to fn: the first chunk names the applied index and digest, the others
// carry the data in order. Until the first chunk arrives the call is routed
// and retried as others are (leader hints followed, transient failures
// retried with backoff until ctx ends); once data has started, a failure
// ends the call, since a part of a backup cannot be resumed.
func (c *Client) BackupGroup(ctx context.Context, group uint64, fn func(*syncv1.BackupChunk) error) error {
	backoff := c.opts.MinBackoff
	var lastErr error
	for {
		c.fetchRoutes(ctx)
		addr, conn, err := c.groupTarget(group)
		if err != nil {
			return err
		}
		started, fnErr, err := c.backupFrom(ctx, conn, group, fn)
		switch {
		case fnErr != nil:
			return fnErr
		case err == nil:
			c.succeeded(group, addr)
			return nil
		case started:
			return typed(err)
		}
		st := status.Convert(err)
		if !retryable(st.Code()) {
			return typed(err)
		}
		lastErr = err
		if hint := leaderHint(st); hint != nil && hint.GetLeaderAddr() != "" && hint.GetLeaderAddr() != addr {
			c.mu.Lock()
			if group == 0 {
				c.leader = hint.GetLeaderAddr()
			} else {
				c.leaders[group] = hint.GetLeaderAddr()
			}
			c.mu.Unlock()
		} else {
			c.failed(group, addr)
		}
		select {
		case <-ctx.Done():
			return giveUp(ctx, lastErr)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// backupFrom runs one attempt: started reports whether a chunk arrived,
// fnErr is fn's own error (returned to the caller as it is), err the
// stream's.
func (c *Client) backupFrom(ctx context.Context, conn syncv1.AdminClient, group uint64, fn func(*syncv1.BackupChunk) error) (started bool, fnErr, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.BackupGroup(ctx, &syncv1.BackupGroupRequest{GroupId: group})
	if err != nil {
		return false, nil, err
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if !started {
				return false, nil, fmt.Errorf("client: backup of group %d: the stream ended before its header", group)
			}
			return true, nil, nil
		}
		if err != nil {
			return started, nil, err
		}
		started = true
		if err := fn(chunk); err != nil {
			return true, err, nil
		}
	}
}

// groupTarget picks a group's believed leader, else its replicas in turn;
// for the meta group (or before the shard map is known) the meta leader,
// else the seeds in turn.
func (c *Client) groupTarget(group uint64) (string, syncv1.AdminClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := ""
	if group != 0 {
		addr = c.leaders[group]
		if addr == "" && c.routes != nil {
			sg, _ := c.routes.m.Group(shard.GroupID(group))
			var candidates []string
			for _, id := range sg.Replicas {
				if a := c.routes.addrs[id]; a != "" {
					candidates = append(candidates, a)
				}
			}
			if len(candidates) > 0 {
				addr = candidates[c.turn[group]%len(candidates)]
			}
		}
	}
	if addr == "" {
		addr = c.leader
	}
	if addr == "" {
		addr = c.seeds[c.next%len(c.seeds)]
		c.next++
	}
	conn, err := c.connLocked(addr)
	if err != nil {
		return addr, nil, err
	}
	return addr, syncv1.NewAdminClient(conn), nil
}
