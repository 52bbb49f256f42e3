package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Fault kinds.
const (
	faultMinority     = "partition-minority"
	faultIsolateBusy  = "partition-busiest-leader"
	faultIsolateMeta  = "partition-meta-leader"
	faultBridge       = "partition-bridge"
	faultKill         = "kill"
	faultPause        = "pause"
	faultRollingStart = "rolling-restart"
	// faultDamageState kills a minority (-9) and, before they restart,
	// replaces each one's state file by an older copy, deletes it, cuts it
	// short or overwrites page headers in it.
	faultDamageState = "kill-damage-state"
)

var faultKinds = []string{faultMinority, faultIsolateBusy, faultIsolateMeta, faultBridge, faultKill, faultPause, faultRollingStart, faultDamageState, faultSlotMove, faultSplit, faultNodeRemoveAdd, faultOperatorMove}

// fault is one entry of the nemesis timeline.
type fault struct {
	Kind  string   `json:"kind"`
	Nodes []string `json:"nodes"`
	Start int64    `json:"start_ns"`
	End   int64    `json:"end_ns"`
	Error string   `json:"error,omitempty"`
}

// schedule draws the order of faults from the seed: every kind once per
// round, rounds shuffled.
func schedule(seed uint64, n int) []string {
	rng := rand.New(rand.NewPCG(seed, 0x6e656d))
	var out []string
	for len(out) < n {
		round := slices.Clone(faultKinds)
		rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		out = append(out, round...)
	}
	return out[:n]
}

// nemesis injects faults into a network of hosts.
type nemesis struct {
	net *network
	// syncd is the build nodes start with; binaries the builds rolling
	// restarts switch between (one: no switch).
	syncd    string
	binaries []string
	shards   int
	rng      *rand.Rand
	admin    *client.Client
	moves    int // slot moves planned by the nemesis
	// operatorMoves counts replica moves and leader transfers.
	operatorMoves int
}

// inject runs one fault for d, then heals it, and returns what it did.
func (nm *nemesis) inject(ctx context.Context, kind string, d time.Duration, rec *recorder) fault {
	f := fault{Kind: kind, Start: rec.now()}
	hosts := nm.net.hosts
	var err error
	switch kind {
	case faultMinority:
		perm := nm.rng.Perm(len(hosts))
		minority := pick(hosts, perm[:(len(hosts)-1)/2])
		err = nm.net.partition(ctx, minority, others(hosts, minority))
		f.Nodes = ids(minority)
	case faultIsolateBusy, faultIsolateMeta:
		h := nm.leaderHost(ctx, kind == faultIsolateMeta)
		err = nm.net.partition(ctx, []*host{h}, others(hosts, []*host{h}))
		f.Nodes = ids([]*host{h})
	case faultBridge:
		// Two halves that share one node: the middle one sees everyone.
		perm := nm.rng.Perm(len(hosts))
		mid := len(hosts) / 2
		left, bridge, right := pick(hosts, perm[:mid]), hosts[perm[mid]], pick(hosts, perm[mid+1:])
		err = nm.net.partition(ctx, left, right)
		f.Nodes = append(append(ids(left), "bridge:"+bridge.id), ids(right)...)
	case faultKill:
		victims := pick(hosts, nm.rng.Perm(len(hosts))[:max(1, (len(hosts)-1)/2)])
		for _, h := range victims {
			h.kill()
		}
		f.Nodes = ids(victims)
	case faultDamageState:
		victims := pick(hosts, nm.rng.Perm(len(hosts))[:max(1, (len(hosts)-1)/2)])
		for _, h := range victims {
			h.kill()
			how, derr := h.damageState(nm.rng)
			if derr != nil && err == nil {
				err = derr
			}
			f.Nodes = append(f.Nodes, h.id+":"+how)
		}
	case faultPause:
		h := hosts[nm.rng.IntN(len(hosts))]
		err = h.pause()
		f.Nodes = ids([]*host{h})
	case faultRollingStart:
		nm.syncd = nm.binaries[(slices.Index(nm.binaries, nm.syncd)+1)%len(nm.binaries)]
		for _, h := range hosts {
			h.stop()
			if err = h.start(nm.syncd, hosts[0], nm.shards); err != nil {
				break
			}
			waitServing(ctx, nm.admin, len(hosts), 30*time.Second)
		}
		f.Nodes = ids(hosts)
		if len(nm.binaries) > 1 {
			f.Nodes = append(f.Nodes, "binary:"+filepath.Base(nm.syncd))
		}
	case faultSlotMove, faultSplit:
		f.Nodes, err = nm.reshape(ctx, kind)
	case faultNodeRemoveAdd:
		f.Nodes, err = nm.removeAndAdd(ctx, d)
	case faultOperatorMove:
		f.Nodes, err = nm.operatorMove(ctx)
	}
	if err != nil {
		f.Error = err.Error()
	}
	if kind != faultRollingStart {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	if err := nm.healAll(ctx); err != nil && f.Error == "" {
		f.Error = err.Error()
	}
	f.End = rec.now()
	return f
}

// healAll removes partitions, resumes paused nodes and restarts dead ones.
func (nm *nemesis) healAll(ctx context.Context) error {
	err := nm.net.heal(ctx)
	for _, h := range nm.net.hosts {
		if h.running() {
			select {
			case werr := <-h.exited: // it stopped by itself: it was removed
				h.exited <- werr
				h.cmd = nil
			default:
				_ = h.resume()
				continue
			}
		}
		if h.wasRemoved() {
			if serr := nm.restartRemoved(h); serr != nil && err == nil {
				err = serr
			}
			continue
		}
		if serr := h.start(nm.syncd, nm.net.hosts[0], nm.shards); serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

// leaderHost finds the node leading the most data groups, or the meta
// leader; a random node when the cluster cannot say.
func (nm *nemesis) leaderHost(ctx context.Context, meta bool) *host {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var resp *syncv1.ClusterStatusResponse
	err := nm.admin.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
		resp, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
		return err
	})
	if err == nil {
		best, most := resp.GetLeaderId(), -1
		if !meta {
			for _, n := range resp.GetNodes() {
				led := 0
				for _, g := range n.GetGroups() {
					if g.GetState() == "Leader" {
						led++
					}
				}
				if led > most {
					best, most = n.GetNodeId(), led
				}
			}
		}
		for _, h := range nm.net.hosts {
			if h.id == best {
				return h
			}
		}
	}
	return nm.net.hosts[nm.rng.IntN(len(nm.net.hosts))]
}

func pick(hosts []*host, idx []int) []*host {
	out := make([]*host, 0, len(idx))
	for _, i := range idx {
		out = append(out, hosts[i])
	}
	return out
}

func others(hosts, not []*host) []*host {
	var out []*host
	for _, h := range hosts {
		if !slices.Contains(not, h) {
			out = append(out, h)
		}
	}
	return out
}

func ids(hosts []*host) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, h.id)
	}
	return out
}

// waitServing waits until the cluster answers a status call with `nodes`
// members all reachable and every group led, or d passes.
func waitServing(ctx context.Context, admin *client.Client, nodes int, d time.Duration) bool {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var resp *syncv1.ClusterStatusResponse
		err := admin.Admin(cctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
			resp, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
			return err
		})
		cancel()
		if err == nil && len(resp.GetNodes()) == nodes && len(resp.GetUnreachable()) == 0 && quorate(resp) {
			return true
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return false
}

// quorate: every node answered and every group has a leader.
func quorate(resp *syncv1.ClusterStatusResponse) bool {
	led := map[uint64]bool{}
	hosted := map[uint64]bool{}
	for _, n := range resp.GetNodes() {
		for _, g := range n.GetGroups() {
			hosted[g.GetGroupId()] = true
			if g.GetState() == "Leader" {
				led[g.GetGroupId()] = true
			}
		}
	}
	return len(hosted) > 0 && len(led) == len(hosted)
}

// describe is a fault's log line; a step the nemesis was refused (an abort
// that came after the switch, say) is said there, not only in nemesis.json.
func describe(f fault) string {
	s := fmt.Sprintf("%s %v (%.1fs..%.1fs)", f.Kind, f.Nodes, float64(f.Start)/1e9, float64(f.End)/1e9)
	if f.Error != "" {
		s += ": " + f.Error
	}
	return s
}
