package inproc

import (
	"context"
	"fmt"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
)

// waitHealth waits until member i's health service reports want for the
// whole server and for the Sync service.
func waitHealth(t *testing.T, c *testcluster.Cluster, i int, want healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) {
	t.Helper()
	conn := dialRaw(t, c.Members[i].GRPCAddr)
	testutil.Eventually(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, svc := range []string{"", "syncstore.v1.Sync"} {
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				return err
			}
			if resp.GetStatus() != want {
				return fmt.Errorf("%s health of %q is %v, want %v", c.Members[i].ID, svc, resp.GetStatus(), want)
			}
		}
		return nil
	})
}

// TestHealthFollowsQuorumAndDrain: a node that lost its meta quorum says
// NOT_SERVING (and SERVING again once the quorum is back), and so does a
// draining node, with the reason the node gives.
func TestHealthFollowsQuorumAndDrain(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	for i := range c.Members {
		waitHealth(t, c, i, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	}
	c.Stop(1)
	c.Stop(2)
	waitHealth(t, c, 0, healthpb.HealthCheckResponse_NOT_SERVING, 15*time.Second)
	if ready, reason := c.Server(0).Ready(); ready || reason == "" {
		t.Fatalf("Ready = %v %q, want not ready with a reason", ready, reason)
	}
	c.Restart(1)
	waitHealth(t, c, 0, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	waitHealth(t, c, 1, healthpb.HealthCheckResponse_SERVING, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Members[1].Node.Drain(ctx); err != nil {
		t.Logf("drain: %v", err) // a group with no other live voter keeps its leader
	}
	waitHealth(t, c, 1, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	if _, reason := c.Server(1).Ready(); reason == "" || reason[:8] != "draining" {
		t.Fatalf("reason %q, want draining", reason)
	}
}
