package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The test network: a bridge in the root namespace (the clients' side, at
// netPrefix.1) and one network namespace per node (netPrefix.(i+2)), joined
// by veth pairs. Every name starts with namePrefix so a crashed run's
// leftovers can be found and removed.
const (
	namePrefix = "sst"
	bridgeName = namePrefix + "-br0"
	netPrefix  = "10.77.0"
	grpcPort   = 7400
	raftPort   = 7401
	gossipPort = 7402
)

// errNoHosts says why this machine cannot run separate hosts.
var errNoHosts = errors.New("jepsen-lite needs root and iproute2 (ip) to make network namespaces")

// canMakeHosts reports whether network namespaces can be made here.
func canMakeHosts() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not running as root", errNoHosts)
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found (Debian: apt-get install iproute2 iptables)", errNoHosts, tool)
		}
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// host is one node's namespace and its syncd process.
type host struct {
	id      string // n1, n2, ...
	index   int
	ns      string
	ip      string
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan error
	// olderState is the state file as an earlier kill left it.
	olderState []byte
	// secArgs are syncd's TLS, token and gossip key flags.
	secArgs []string
}

func (h *host) grpcAddr() string { return fmt.Sprintf("%s:%d", h.ip, grpcPort) }

// network is the bridge and the hosts.
type network struct {
	hosts []*host
	sec   *runSecurity
}

// setupNetwork removes leftovers of an earlier run and makes n hosts.
func setupNetwork(ctx context.Context, n int, dir string) (*network, error) {
	teardownNetwork(ctx, 16)
	if err := run(ctx, "ip", "link", "add", bridgeName, "type", "bridge"); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "addr", "add", netPrefix + ".1/24", "dev", bridgeName},
		{"ip", "link", "set", bridgeName, "up"},
		// Bridged frames may go through iptables' FORWARD chain (br_netfilter),
		// whose policy is DROP where Docker is installed.
		{"iptables", "-I", "FORWARD", "-i", bridgeName, "-o", bridgeName, "-j", "ACCEPT"},
	}
	net := &network{}
	for i := range n {
		h := &host{
			id: fmt.Sprintf("n%d", i+1), index: i,
			ns: fmt.Sprintf("%s-n%d", namePrefix, i+1), ip: fmt.Sprintf("%s.%d", netPrefix, i+2),
			dataDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)),
		}
		veth := fmt.Sprintf("%s-v%d", namePrefix, i+1)
		steps = append(steps,
			[]string{"ip", "netns", "add", h.ns},
			[]string{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
			[]string{"ip", "link", "set", veth, "master", bridgeName},
			[]string{"ip", "link", "set", veth, "up"},
			[]string{"ip", "-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", h.ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h.ns, "link", "set", "lo", "up"},
		)
		net.hosts = append(net.hosts, h)
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			teardownNetwork(ctx, n)
			return nil, err
		}
	}
	return net, nil
}

// teardownNetwork removes the namespaces and the bridge (errors ignored:
// some may not exist).
func teardownNetwork(ctx context.Context, n int) {
	for i := range n {
		_ = run(ctx, "ip", "netns", "del", fmt.Sprintf("%s-n%d", namePrefix, i+1))
		_ = run(ctx, "ip", "link", "del", fmt.Sprintf("%s-v%d", namePrefix, i+1))
	}
	for run(ctx, "iptables", "-D", "FORWARD", "-i", bridgeName, "-o", bridgeName, "-j", "ACCEPT") == nil {
	}
	_ = run(ctx, "ip", "link", "del", bridgeName)
}

// start runs syncd in the host's namespace. The first host bootstraps; the
// others join through it (ignored on restarts: their data dir has state).
func (h *host) start(syncd string, first *host, shards int) error {
	args := []string{"netns", "exec", h.ns, syncd,
		"--node-id", h.id, "--data-dir", h.dataDir,
		"--grpc-addr", h.grpcAddr(),
		"--raft-addr", fmt.Sprintf("%s:%d", h.ip, raftPort),
		"--gossip-addr", fmt.Sprintf("%s:%d", h.ip, gossipPort),
		"--shards", fmt.Sprint(shards),
		// Compact collection tombstones hard, so devices meet RESET.
		"--tombstone-keep", "2", "--tombstone-compact-every", "1s",
	}
	args = append(args, h.secArgs...)
	if h != first {
		args = append(args, "--join", first.grpcAddr())
	}
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", h.id, err)
	}
	h.cmd, h.exited = cmd, make(chan error, 1)
	go func() {
		h.exited <- cmd.Wait()
		logf.Close()
	}()
	return nil
}

func (h *host) running() bool { return h.cmd != nil }

// wasRemoved reports whether the node marked its data dir removed (it
// stopped itself after a node remove, and refuses that dir).
func (h *host) wasRemoved() bool {
	_, err := os.Stat(filepath.Join(h.dataDir, "REMOVED"))
	return err == nil
}

// kill sends SIGKILL and waits for the process to go.
func (h *host) kill() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGCONT) // a paused process dies too
	_ = h.cmd.Process.Kill()
	<-h.exited
	h.cmd = nil
}

// stop sends SIGTERM and waits, killing after a grace period.
func (h *host) stop() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGCONT)
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
		h.cmd = nil
	case <-time.After(15 * time.Second):
		h.kill()
	}
}

func (h *host) pause() error  { return h.signal(syscall.SIGSTOP) }
func (h *host) resume() error { return h.signal(syscall.SIGCONT) }

func (h *host) signal(sig syscall.Signal) error {
	if h.cmd == nil {
		return fmt.Errorf("%s is not running", h.id)
	}
	return h.cmd.Process.Signal(sig)
}

// cut drops all traffic between host a and host b, both ways, inside their
// namespaces; the clients (on the bridge) still reach both.
func (n *network) cut(ctx context.Context, a, b *host) error {
	for _, p := range [][2]*host{{a, b}, {b, a}} {
		if err := run(ctx, "ip", "netns", "exec", p[0].ns, "iptables", "-A", "INPUT", "-s", p[1].ip, "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// heal removes every cut.
func (n *network) heal(ctx context.Context) error {
	var errs []error
	for _, h := range n.hosts {
		errs = append(errs, run(ctx, "ip", "netns", "exec", h.ns, "iptables", "-F", "INPUT"))
	}
	return errors.Join(errs...)
}

// partition cuts every link between the two sides.
func (n *network) partition(ctx context.Context, side1, side2 []*host) error {
	for _, a := range side1 {
		for _, b := range side2 {
			if err := n.cut(ctx, a, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// statePath is the node's state file (the storage engine's).
func (h *host) statePath() string { return filepath.Join(h.dataDir, "storage", "state.db") }

// damageState damages the state file of a host that was just killed, in a
// way drawn from rng, and says which. A copy of the file as the kill left
// it (consistent: a killed process leaves its last commit whole) is kept
// first, to stand in as the older copy next time.
func (h *host) damageState(rng *rand.Rand) (string, error) {
	path := h.statePath()
	current, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: read state: %w", h.id, err)
	}
	older := h.olderState
	h.olderState = current
	ways := []string{"deleted", "truncated", "page-headers"}
	if older != nil {
		ways = append(ways, "older-copy")
	}
	how := ways[rng.IntN(len(ways))]
	switch how {
	case "older-copy":
		err = os.WriteFile(path, older, 0o600)
	case "deleted":
		err = os.Remove(path)
	case "truncated":
		err = os.Truncate(path, int64(rng.IntN(max(1, len(current)/2))))
	case "page-headers":
		err = overwritePageHeaders(path, rng)
	}
	if err != nil {
		return how, fmt.Errorf("%s: damage state (%s): %w", h.id, how, err)
	}
	return how, nil
}

// overwritePageHeaders writes garbage over the header (id, flags, count)
// of a few pages among the first ones, where the tree's pages are.
func overwritePageHeaders(path string, rng *rand.Rand) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	page := int64(os.Getpagesize())
	pages := st.Size() / page
	if pages < 3 {
		return nil
	}
	garbage := make([]byte, 12)
	for range 8 {
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		p := 2 + rng.Int64N(min(pages-2, 64))
		if _, err := f.WriteAt(garbage, p*page); err != nil {
			return err
		}
	}
	return nil
}
