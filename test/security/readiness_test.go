package security

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/syncstore/syncstore/internal/testproc"
	"github.com/syncstore/syncstore/internal/testutil"
)

var debugListening = regexp.MustCompile(`msg="debug endpoints listening" addr=(\S+)`)

func get(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// probe reads /livez, /readyz and the gRPC health of a node.
func probe(t *testing.T, debug, grpcAddr string) (live, ready int, readyBody string, health healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	live, _, err := get("http://" + debug + "/livez")
	if err != nil {
		t.Fatal(err)
	}
	ready, readyBody, err = get("http://" + debug + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return live, ready, readyBody, resp.GetStatus()
}

// TestReadinessWhileStartingAndServing: a node that has not joined yet is
// live but not ready (HTTP 503 saying why, gRPC NOT_SERVING); a node that
// bootstrapped becomes ready.
func TestReadinessWhileStartingAndServing(t *testing.T) {
	common := []string{"--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0"}
	// Joining through a port where nothing listens: it stays "starting".
	waiting := testproc.Start(t, "joiner", syncdBin, append([]string{"--node-id", "j1", "--data-dir", t.TempDir(), "--join", "127.0.0.1:1"}, common...)...)
	grpcAddr := waiting.WaitLine(t, 0, testproc.Listening, 30*time.Second)[1]
	debug := waiting.WaitLine(t, 0, debugListening, 30*time.Second)[1]
	live, ready, body, health := probe(t, debug, grpcAddr)
	if live != http.StatusOK || ready != http.StatusServiceUnavailable || !strings.Contains(body, "starting") || health != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("a node still joining: livez %d, readyz %d %q, health %v", live, ready, body, health)
	}

	solo := testproc.Start(t, "solo", syncdBin, append([]string{"--node-id", "s1", "--data-dir", t.TempDir()}, common...)...)
	grpcAddr = solo.WaitLine(t, 0, testproc.Listening, 30*time.Second)[1]
	debug = solo.WaitLine(t, 0, debugListening, 30*time.Second)[1]
	testutil.Eventually(t, 30*time.Second, func() error {
		live, ready, body, health := probe(t, debug, grpcAddr)
		if live != http.StatusOK || ready != http.StatusOK || health != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("livez %d, readyz %d %q, health %v", live, ready, body, health)
		}
		return nil
	})
}
