package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/syncstore/syncstore/internal/devcerts"
)

// switchEnv set to 0 skips the test even where Docker is there; set to 1,
// it fails where Docker is not.
const switchEnv = "SYNCSTORE_DOCKER_TEST"

// imageUID is the user the Dockerfile runs syncd as.
const imageUID = 10001

var nodes = []string{"n1", "n2", "n3"}

// requireDocker skips the test, saying why, unless docker, a reachable
// daemon and docker-compose are all there. With SYNCSTORE_DOCKER_TEST=1
// (.ci/run sets it where the daemon answers) a missing piece fails the
// test instead, so that CI cannot pass by skipping it.
func requireDocker(t *testing.T) {
	t.Helper()
	missing := t.Skipf
	switch os.Getenv(switchEnv) {
	case "0":
		t.Skipf("skipped: %s=0", switchEnv)
	case "1":
		missing = t.Fatalf
	}
	for _, bin := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing("no %s on PATH (this test builds the image and runs deploy/compose.yaml)", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		missing("the Docker daemon does not answer (docker version: %v: %s)", err, bytes.TrimSpace(out))
	}
}

// cluster is one run of deploy/compose.yaml under a project name of its own.
type cluster struct {
	t       *testing.T
	root    string // the repository
	project string
	image   string
	prefix  int // SYNCSTORE_PORT_PREFIX
	certs   string
	bundle  *devcerts.Bundle
	syncctl string // the static syncctl built with the image
	env     []string
}

// newCluster makes certificates, builds the image and the host's syncctl,
// and brings the cluster up. Its teardown (compose down -v, the image
// removed) is registered before anything starts, so it runs even when
// the test fails half-way.
func newCluster(ctx context.Context, t *testing.T) *cluster {
	t.Helper()
	suffix := randomHex(t, 4)
	c := &cluster{
		t:       t,
		root:    repoRoot(t),
		project: "syncstoretest" + suffix,
		image:   "syncstore-test:" + suffix,
		prefix:  freePortPrefix(t),
	}
	tmp := t.TempDir()
	c.certs = filepath.Join(tmp, "certs")
	b, err := devcerts.New(devcerts.Options{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(c.certs, false); err != nil {
		t.Fatal(err)
	}
	c.bundle = b
	readableByImage(t, c.certs)
	c.env = append(os.Environ(),
		"SYNCSTORE_CERTS="+c.certs,
		"SYNCSTORE_IMAGE="+c.image,
		fmt.Sprintf("SYNCSTORE_PORT_PREFIX=%d", c.prefix))
	t.Cleanup(c.teardown)

	build := filepath.Join(tmp, "build")
	start := time.Now()
	if out, err := c.run(ctx, 4*time.Minute, []string{"BUILD_DIR=" + build}, filepath.Join(c.root, "scripts", "docker-build.sh"), "-q", "-t", c.image); err != nil {
		t.Fatalf("scripts/docker-build.sh: %v\n%s", err, out)
	}
	c.syncctl = filepath.Join(build, "syncctl")
	t.Logf("image %s built in %s; project %s, ports %d01-%d33", c.image, time.Since(start).Round(time.Second), c.project, c.prefix, c.prefix)
	if out, err := c.compose(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	return c
}

// readableByImage lets the image's user read the node keys and the gossip
// key of the temporary directory: chown as root (CI), else widen the mode.
func readableByImage(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"n1-key.pem", "n2-key.pem", "n3-key.pem", "gossip.key"} {
		key := filepath.Join(dir, name)
		var err error
		if os.Geteuid() == 0 {
			err = os.Chown(key, imageUID, imageUID)
		} else {
			err = os.Chmod(key, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (c *cluster) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if c.t.Failed() {
		out, _ := c.compose(ctx, "logs", "--no-color", "--tail=60")
		c.t.Logf("compose logs (the last lines of each node):\n%s", out)
	}
	if out, err := c.compose(ctx, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
		c.t.Errorf("compose down: %v\n%s", err, out)
	}
	if out, err := c.run(ctx, time.Minute, nil, "docker", "rmi", "-f", c.image); err != nil {
		c.t.Logf("docker rmi %s: %v\n%s", c.image, err, out)
	}
}

// run runs a command with the cluster's environment (and extra), bounded
// by timeout, and returns its combined output.
func (c *cluster) run(ctx context.Context, timeout time.Duration, extra []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append([]string(nil), c.env...), extra...)
	cmd.Dir = c.root
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *cluster) compose(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-p", c.project, "-f", filepath.Join(c.root, "deploy", "compose.yaml")}, args...)
	return c.run(ctx, 2*time.Minute, nil, "docker-compose", full...)
}

// container is the id of a service's container.
func (c *cluster) container(ctx context.Context, service string) string {
	c.t.Helper()
	out, err := c.compose(ctx, "ps", "-q", service)
	id := strings.TrimSpace(out)
	if err != nil || id == "" {
		c.t.Fatalf("compose ps -q %s: %v %q", service, err, out)
	}
	return id
}

func (c *cluster) running(ctx context.Context, id string) bool {
	out, err := c.run(ctx, 30*time.Second, nil, "docker", "inspect", "-f", "{{.State.Running}}", id)
	return err == nil && strings.TrimSpace(out) == "true"
}

func (c *cluster) grpcAddr(i int) string  { return fmt.Sprintf("127.0.0.1:%d0%d", c.prefix, i+1) }
func (c *cluster) debugAddr(i int) string { return fmt.Sprintf("127.0.0.1:%d3%d", c.prefix, i+1) }

func (c *cluster) allAddrs() string {
	addrs := make([]string, len(nodes))
	for i := range nodes {
		addrs[i] = c.grpcAddr(i)
	}
	return strings.Join(addrs, ",")
}

// ctlResult is one syncctl run.
type ctlResult struct {
	stdout, stderr string
	err            error
}

// usage reports exit code 2: syncctl refused its command line, which no
// retry will change.
func (r ctlResult) usage() bool {
	var ee *exec.ExitError
	return errors.As(r.err, &ee) && ee.ExitCode() == 2
}

// failure is r as an error for waitFor: permanent when it is a usage error.
func (r ctlResult) failure(what string) error {
	err := fmt.Errorf("%s: %s", what, r)
	if r.usage() {
		return permanent{err}
	}
	return err
}

// permanent is an error waitFor does not wait out.
type permanent struct{ error }

func (r ctlResult) String() string {
	return fmt.Sprintf("err %v, stdout %q, stderr %q", r.err, r.stdout, r.stderr)
}

// ctl runs the host's syncctl over TLS against every node with the
// given credential flags (cred(...) below) and args.
func (c *cluster) ctl(ctx context.Context, credFlags []string, args ...string) ctlResult {
	full := append([]string{"--addr", c.allAddrs(), "--ca", filepath.Join(c.certs, "ca.pem"), "--timeout", "10s"}, credFlags...)
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.syncctl, full...)
	cmd.Env = os.Environ()
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return ctlResult{out.String(), errOut.String(), err}
}

// token is syncctl's flag for role's bearer token; admin uses the admin
// client certificate instead, so both kinds of credential are exercised.
func (c *cluster) token(role string) []string {
	return []string{"--token-file", filepath.Join(c.certs, "token-"+role)}
}

func (c *cluster) adminCert() []string {
	return []string{"--cert", filepath.Join(c.certs, "client-admin.pem"), "--key", filepath.Join(c.certs, "client-admin-key.pem")}
}

// statusView is the part of `syncctl status --json` the test reads.
type statusView struct {
	AllQuorum bool `json:"all_groups_have_quorum"`
	Nodes     []struct {
		ID     string `json:"id"`
		Gossip string `json:"gossip"`
	} `json:"nodes"`
	Groups []struct {
		ID        uint64            `json:"id"`
		Leader    string            `json:"leader"`
		Voters    []string          `json:"voters"`
		Nonvoters []string          `json:"nonvoters"`
		Lag       map[string]uint64 `json:"lag"`
	} `json:"groups"`
}

func (c *cluster) status(ctx context.Context) (statusView, error) {
	var v statusView
	r := c.ctl(ctx, c.adminCert(), "status", "--json")
	// status exits non-zero without quorum: its JSON still says why.
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		return v, r.failure("syncctl status")
	}
	return v, nil
}

// healthy checks that every node in up is alive in gossip, is a voter of
// every group, is caught up, and answers /readyz; a node in down leads
// nothing.
func (c *cluster) healthy(ctx context.Context, up, down []string) error {
	v, err := c.status(ctx)
	if err != nil {
		return err
	}
	if !v.AllQuorum {
		return errors.New("not every group has quorum")
	}
	alive := map[string]bool{}
	for _, n := range v.Nodes {
		alive[n.ID] = n.Gossip == "alive"
	}
	for _, n := range up {
		if !alive[n] {
			return fmt.Errorf("node %s is not alive in gossip", n)
		}
	}
	if len(v.Groups) == 0 {
		return errors.New("no groups")
	}
	for _, g := range v.Groups {
		for _, n := range down {
			if g.Leader == n {
				return fmt.Errorf("group %d is still led by %s, which is down", g.ID, n)
			}
		}
		for _, n := range up {
			if !slices.Contains(g.Voters, n) {
				return fmt.Errorf("group %d: %s is not a voter (voters %v, nonvoters %v)", g.ID, n, g.Voters, g.Nonvoters)
			}
			if lag, ok := g.Lag[n]; ok && lag > 0 {
				return fmt.Errorf("group %d: %s lags %d entries", g.ID, n, lag)
			}
		}
	}
	for i, n := range nodes {
		if !slices.Contains(up, n) {
			continue
		}
		if err := httpOK(ctx, "http://"+c.debugAddr(i)+"/readyz"); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, strings.TrimSpace(body.String()))
	}
	return nil
}

// dial opens a gRPC connection to node i over TLS, presenting role's
// client certificate (its identity: CN and OU the role).
func (c *cluster) dial(i int, role string) *grpc.ClientConn {
	c.t.Helper()
	cfg, err := c.bundle.ClientTLS(role)
	if err != nil {
		c.t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.grpcAddr(i), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// waitFor polls cond every interval until it returns nil, failing the test
// with its last error after timeout, or at once on a permanent error.
func waitFor(ctx context.Context, t *testing.T, timeout, interval time.Duration, what string, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if errors.As(err, new(permanent)) {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

// freePortPrefix picks a SYNCSTORE_PORT_PREFIX whose twelve ports are free
// on 127.0.0.1 (TCP, and UDP for gossip), starting at a random one so that
// a developer's own compose cluster (75) is left alone.
func freePortPrefix(t *testing.T) int {
	t.Helper()
	const lo, hi = 50, 65
	n, err := rand.Int(rand.Reader, big.NewInt(hi-lo+1))
	if err != nil {
		t.Fatal(err)
	}
	for k := range hi - lo + 1 {
		p := lo + (int(n.Int64())+k)%(hi-lo+1)
		if portsFree(p) {
			return p
		}
	}
	t.Fatalf("no free port prefix in %d..%d (each needs 127.0.0.1:PP01-PP33)", lo, hi)
	return 0
}

func portsFree(prefix int) bool {
	for kind := range 4 {
		for i := 1; i <= len(nodes); i++ {
			addr := fmt.Sprintf("127.0.0.1:%d%d%d", prefix, kind, i)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			l.Close()
			if kind == 2 { // gossip: UDP too
				pc, err := net.ListenPacket("udp", addr)
				if err != nil {
					return false
				}
				pc.Close()
			}
		}
	}
	return true
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
