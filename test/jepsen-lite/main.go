// Command jepsen-lite runs syncd as separate processes on their own network
// hosts (Linux network namespaces on a bridge), drives a recorded client
// workload through the Go client while a nemesis partitions, kills, pauses
// and restarts nodes on a schedule drawn from a seed, heals everything,
// reads every replica, and checks the whole history.
//
//	go run ./test/jepsen-lite --nodes 3 --time 2m --seed 1 --out /tmp/jl
//
// Exit status: 0 VALID, 1 INVALID, 2 the run could not be made (the reason
// is printed, e.g. not root).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/test/jepsen-lite/checker"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

const (
	exitValid   = 0
	exitInvalid = 1
	exitSetup   = 2
)

// subscribers is how many Subscribe consumers follow timelines all run long.
const subscribers = 2

// linearizableBudget bounds the linearizability check of a whole run; a
// timeline still undecided then is reported, not passed.
const linearizableBudget = 5 * time.Minute

type options struct {
	repo       string // the repository root, where ./cmd/syncd is
	nodes      int
	duration   time.Duration
	seed       uint64
	out        string
	shards     int
	workers    int
	faultEvery time.Duration
	settle     time.Duration
	insecure   bool // plaintext, no tokens, no gossip key
	// sameBinary: rolling restarts keep the one build (by default they
	// switch every node between it and the upgrade test build).
	sameBinary bool
}

func main() {
	o := options{repo: "."}
	flag.IntVar(&o.nodes, "nodes", 3, "syncd nodes, each on its own network host")
	flag.DurationVar(&o.duration, "time", 2*time.Minute, "how long the workload and the nemesis run")
	flag.Uint64Var(&o.seed, "seed", uint64(time.Now().UnixNano()), "seed of the workload and the fault schedule")
	flag.StringVar(&o.out, "out", "", "run directory (default: a new temporary one)")
	flag.IntVar(&o.shards, "shards", 4, "data groups")
	flag.IntVar(&o.workers, "workers", 8, "concurrent clients")
	flag.DurationVar(&o.faultEvery, "fault-every", 12*time.Second, "one fault per period: half quiet, half faulty")
	flag.DurationVar(&o.settle, "settle", 90*time.Second, "how long the healed cluster may take to converge")
	flag.BoolVar(&o.insecure, "insecure", false, "run syncd without TLS, tokens and gossip encryption (--insecure)")
	flag.BoolVar(&o.sameBinary, "same-binary", false, "rolling restarts keep the one build; by default each switches every node between it and a build with -tags "+upgradeTag+" (a newer cluster version, never finalized), so the cluster runs mixed binaries")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	summary, err := runTest(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jepsen-lite:", err)
		os.Exit(exitSetup)
	}
	if strings.HasPrefix(summary, "jepsen-lite: VALID") {
		os.Exit(exitValid)
	}
	os.Exit(exitInvalid)
}

// upgradeTag builds a syncd of the next cluster version (fsm's
// version_upgradetest.go): a rolling restart onto it and back is a rolling
// upgrade and downgrade that is never finalized.
const upgradeTag = "syncstore_upgrade_test"

// buildSyncd builds ./cmd/syncd of repo into out, with extra go build flags.
func buildSyncd(ctx context.Context, repo, out string, flags ...string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, "./cmd/syncd")
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = repo
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build syncd %v (run from the repository root): %w: %s", flags, err, msg)
	}
	return nil
}

// runTest makes the hosts, runs the workload and the nemesis, checks the
// history and writes the run directory. It returns the summary line.
func runTest(ctx context.Context, o options, log io.Writer) (string, error) {
	if err := canMakeHosts(); err != nil {
		return "", err
	}
	if o.out == "" {
		dir, err := os.MkdirTemp("", "jepsen-lite-")
		if err != nil {
			return "", err
		}
		o.out = dir
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "jepsen-lite: %d nodes, %s, seed %d, run dir %s\n", o.nodes, o.duration, o.seed, o.out)

	syncd := filepath.Join(o.out, "syncd")
	if err := buildSyncd(ctx, o.repo, syncd); err != nil {
		return "", err
	}
	binaries := []string{syncd}
	if !o.sameBinary {
		next := filepath.Join(o.out, "syncd-next")
		if err := buildSyncd(ctx, o.repo, next, "-tags", upgradeTag); err != nil {
			return "", err
		}
		binaries = append(binaries, next)
	}
	net, err := setupNetwork(ctx, o.nodes, o.out)
	if err != nil {
		return "", fmt.Errorf("network: %w", err)
	}
	defer func() {
		for _, h := range net.hosts {
			h.kill()
		}
		teardownNetwork(context.Background(), o.nodes)
	}()

	if net.sec, err = newRunSecurity(filepath.Join(o.out, "certs"), net.hosts, o.insecure); err != nil {
		return "", err
	}
	var addrs []string
	for _, h := range net.hosts {
		addrs = append(addrs, h.grpcAddr())
		h.secArgs = net.sec.nodeArgs(h.id)
	}
	adminOpts, err := net.sec.options("admin", client.Options{AttemptTimeout: 3 * time.Second})
	if err != nil {
		return "", err
	}
	admin, err := client.New(addrs, adminOpts)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	for i, h := range net.hosts {
		if err := h.start(syncd, net.hosts[0], o.shards); err != nil {
			return "", err
		}
		if i == 0 && !waitServing(ctx, admin, 1, 30*time.Second) {
			return "", errors.New("the first node did not start serving")
		}
	}
	if !waitServing(ctx, admin, o.nodes, 90*time.Second) {
		return "", errors.New("the cluster did not form (see the n*.log files in the run dir)")
	}

	rec := newRecorder()
	appOpts, err := net.sec.options("app", client.Options{AttemptTimeout: 2 * time.Second})
	if err != nil {
		return "", err
	}
	cl, err := client.New(addrs, appOpts)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	consumers, err := startConsumers(ctx, cl, subscribers)
	if err != nil {
		return "", err
	}
	// The workload runs for o.duration and, if faults took longer to inject
	// and heal than planned, until the last scheduled fault has healed: a run
	// always has every fault it scheduled.
	workStart := time.Now()
	wctx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	workDone := make(chan struct{})
	go func() {
		runWorkload(wctx, cl, o.workers, o.seed, rec)
		close(workDone)
	}()

	nm := &nemesis{net: net, syncd: syncd, binaries: binaries, shards: o.shards, rng: rand.New(rand.NewPCG(o.seed, 1)), admin: admin}
	var faults []fault
	kinds := schedule(o.seed, int(o.duration/o.faultEvery))
	for _, kind := range kinds {
		select {
		case <-ctx.Done():
		case <-time.After(o.faultEvery / 2):
		}
		if ctx.Err() != nil {
			break
		}
		f := nm.inject(ctx, kind, o.faultEvery/2, rec)
		fmt.Fprintln(log, "nemesis:", describe(f))
		faults = append(faults, f)
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(workStart.Add(o.duration))):
	}
	stopWork()
	<-workDone

	if err := nm.healAll(ctx); err != nil {
		fmt.Fprintln(log, "heal:", err)
	}
	if !waitServing(ctx, admin, o.nodes, o.settle) {
		fmt.Fprintln(log, "the healed cluster did not report every group led in time")
	}
	moves, merr := waitMovesDone(ctx, admin, o.settle)
	final, ferr := readFinal(ctx, net, admin, allTimelines(), o.settle)
	subs := stopConsumers(consumers, final, o.settle)
	ops := rec.history()
	verdicts := []checker.Verdict{
		checker.Acknowledged(ops, final),
		checker.Sequences(ops, final),
		checker.IdempotencyKeys(final),
		checker.Linearizable(ops, final, linearizableBudget),
		checker.Replicas(final),
		checker.FanOut(ops, final),
		checker.Subscriptions(subs, final),
		checker.Collections(ops, final),
		checker.Devices(ops, final),
		checker.Sessions(ops, final, checker.OnePerClass),
	}
	if ferr != nil {
		verdicts = append(verdicts, checker.Verdict{Checker: "final-read", Problems: []string{ferr.Error()}})
	}
	if merr != nil {
		verdicts = append(verdicts, checker.Verdict{Checker: "moves", Problems: []string{merr.Error()}})
	}
	summary := checker.Summary(verdicts)
	if err := writeRun(o.out, ops, faults, final, subs, verdicts, summary); err != nil {
		return "", err
	}
	if err := writeChart(filepath.Join(o.out, "chart.png"), ops, faults, rec.now()); err != nil {
		return "", fmt.Errorf("chart: %w", err)
	}
	printStats(log, ops, faults, subs)
	printMoves(log, moves, ops, rec.start)
	for _, v := range verdicts {
		fmt.Fprintf(log, "checker %-13s valid=%v %s\n", v.Checker, v.Valid, strings.Join(v.Problems, "; "))
	}
	fmt.Fprintln(log, summary)
	return summary, nil
}

func writeRun(dir string, ops []history.Op, faults []fault, final history.Final, subs []history.Subscription, verdicts []checker.Verdict, summary string) error {
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := history.Write(f, ops); err != nil {
		return err
	}
	for name, v := range map[string]any{"nemesis.json": faults, "final.json": final, "subscriptions.json": subs, "verdicts.json": verdicts} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary+"\n"), 0o644)
}

func printStats(log io.Writer, ops []history.Op, faults []fault, subs []history.Subscription) {
	count := map[history.Outcome]int{}
	byOpKind := map[history.Kind]map[history.Outcome]int{}
	for _, op := range ops {
		count[op.Outcome]++
		if byOpKind[op.Kind] == nil {
			byOpKind[op.Kind] = map[history.Outcome]int{}
		}
		byOpKind[op.Kind][op.Outcome]++
	}
	byKind := map[string]int{}
	for _, f := range faults {
		byKind[f.Kind]++
	}
	fmt.Fprintf(log, "operations: %d attempted, %d ok, %d failed, %d unknown\n", len(ops), count[history.OK], count[history.Fail], count[history.Unknown])
	for _, k := range []history.Kind{history.Append, history.Send, history.Head, history.Pull, history.RecordWrite, history.RecordSync, history.RecordGet,
		history.Login, history.Logout, history.Ack, history.MarkRead} {
		c := byOpKind[k]
		fmt.Fprintf(log, "  %-6s %d ok, %d failed, %d unknown\n", k, c[history.OK], c[history.Fail], c[history.Unknown])
	}
	received := 0
	for _, s := range subs {
		for _, es := range s.Received {
			received += len(es)
		}
	}
	fmt.Fprintf(log, "subscriptions: %d consumers received %d entries\n", len(subs), received)
	fmt.Fprintf(log, "faults: %v\n", byKind)
	unavail := unavailability(ops, faults)
	for _, k := range faultKinds {
		if d, ok := unavail[k]; ok {
			fmt.Fprintf(log, "longest time without a successful append during/after %s: %s\n", k, d.Round(time.Millisecond))
		}
	}
}
