package inproc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// TestLinearizableReadsAfterFailoverOnAnIdleCluster: a new leader whose log
// ends in entries the state machine never sees (Raft's no-op) must still
// serve linearizable reads, through any node, and see every acknowledged
// write of its predecessor.
func TestLinearizableReadsAfterFailoverOnAnIdleCluster(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last uint64
	for i := range 20 {
		resp, err := cl.Append(ctx, "idle", []byte(fmt.Sprint(i)), client.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = resp.GetSeq()
	}
	c.Stop(c.WaitLeader(10 * time.Second))
	c.WaitLeader(10 * time.Second)
	for _, m := range c.Members {
		if m.Node == nil {
			continue
		}
		one, err := client.New([]string{m.GRPCAddr}, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		head, err := one.Head(rctx, "idle", client.Linearizable)
		page, perr := one.Pull(rctx, "idle", last-1, 10, client.Linearizable)
		rcancel()
		one.Close()
		if err != nil || perr != nil {
			t.Fatalf("linearizable read through %s: %v / %v", m.ID, err, perr)
		}
		if head != last || page.GetHeadSeq() != last || len(page.GetEntries()) != 1 || page.GetStatus() != syncv1.PullStatus_PULL_STATUS_OK {
			t.Fatalf("through %s: head %d, page %v; want head %d and one entry", m.ID, head, page, last)
		}
	}
}

// TestStaleReadsServeWithoutQuorum: with two of three nodes down, the last
// node cannot serve a linearizable read but serves a stale one.
func TestStaleReadsServeWithoutQuorum(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client().Append(ctx, "s", []byte("x"), client.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(10 * time.Second)
	c.Stop(0)
	c.Stop(1)
	last, err := client.New([]string{c.Members[2].GRPCAddr}, client.Options{AttemptTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer last.Close()
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = last.Head(rctx, "s", client.Linearizable)
	rcancel()
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("linearizable read without quorum: %v, want Unavailable or DeadlineExceeded", err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		head, err := last.Head(ctx, "s", client.Stale)
		if err != nil || head != 1 {
			return fmt.Errorf("stale head %d, %v", head, err)
		}
		return nil
	})
}
