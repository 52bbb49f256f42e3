package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// budget bounds the whole test; CI has two or three minutes for it.
const budget = 5 * time.Minute

// timelines the workload appends to; members of the conversation are
// other timelines, so that deliveries do not move the appends' seqs.
var timelines = []string{"t0", "t1", "t2", "t3", "t4"}

// TestComposeCluster builds the image, runs deploy/compose.yaml, and from
// the host, through syncctl over TLS: appends, pulls, and a send; then it
// kills n1, checks the writes go on, restarts it, and checks every
// acknowledged entry is on every node.
func TestComposeCluster(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	c := newCluster(ctx, t)
	waitFor(ctx, t, 90*time.Second, 500*time.Millisecond, "three nodes, every group on all three, /readyz", func() error {
		return c.healthy(ctx, nodes, nil)
	})
	t.Logf("cluster up %s after the start", time.Since(start).Round(time.Second))

	t.Run("credentials are required", func(t *testing.T) { checkRefusals(ctx, t, c) })

	w := &workload{c: c, acked: map[string][]string{}}
	for round := range 4 {
		for _, tl := range timelines {
			w.append(ctx, t, tl, fmt.Sprintf("before-%d", round), 30*time.Second)
		}
	}
	w.send(ctx, t, "room", "hi all", "u-bob", "u-alice,u-carol", 30*time.Second)
	w.checkPulls(ctx, t)

	// Kill n1, the node that bootstrapped the cluster (and most often the
	// meta leader): the other two keep a quorum of every group.
	n1 := c.container(ctx, "n1")
	if out, err := c.run(ctx, 30*time.Second, nil, "docker", "kill", n1); err != nil {
		t.Fatalf("docker kill n1: %v\n%s", err, out)
	}
	killed := time.Now()
	for round := range 3 {
		for _, tl := range timelines {
			w.append(ctx, t, tl, fmt.Sprintf("n1-down-%d", round), 30*time.Second)
		}
	}
	w.send(ctx, t, "room", "n1 is down", "u-alice", "u-bob,u-carol", 30*time.Second)
	if c.running(ctx, n1) {
		t.Fatal("n1 is running again: the writes were not made with it down (restart policy?)")
	}
	t.Logf("%d writes with n1 down in %s", 3*len(timelines)+1, time.Since(killed).Round(100*time.Millisecond))
	w.checkPulls(ctx, t)

	if out, err := c.run(ctx, 30*time.Second, nil, "docker", "start", n1); err != nil {
		t.Fatalf("docker start n1: %v\n%s", err, out)
	}
	waitFor(ctx, t, 90*time.Second, 500*time.Millisecond, "n1 back: a caught-up voter of every group, /readyz", func() error {
		return c.healthy(ctx, nodes, nil)
	})
	w.checkPulls(ctx, t)
	w.checkEveryReplica(ctx, t)
	t.Logf("whole run %s", time.Since(start).Round(time.Second))
}

// checkRefusals shows that the cluster runs with TLS and authentication,
// as compose.yaml asks: a plaintext call, a call without credentials and a
// reader's write all fail with the right code.
func checkRefusals(ctx context.Context, t *testing.T, c *cluster) {
	plain, err := grpc.NewClient(c.grpcAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = syncv1.NewSyncClient(plain).Head(hctx, &syncv1.HeadRequest{Timeline: proto.String("t0")})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext Head to the TLS port: %v, want Unavailable", err)
	}

	tests := []struct {
		name  string
		cred  []string
		args  []string
		wantS string // in stderr
	}{
		{"no token", nil, []string{"append", "t0", "x"}, "Unauthenticated"},
		{"reader writes", c.token("reader"), []string{"append", "t0", "x"}, "PermissionDenied"},
		{"app calls Admin", c.token("app"), []string{"status"}, "PermissionDenied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.ctl(ctx, tt.cred, tt.args...)
			if r.err == nil || !strings.Contains(r.stderr, tt.wantS) {
				t.Errorf("syncctl %v: %s; want a failure saying %s", tt.args, r, tt.wantS)
			}
		})
	}
	// Nothing the refused calls tried was appended.
	r := c.ctl(ctx, c.token("reader"), "head", "t0")
	if r.err != nil || !strings.Contains(r.stdout, "t0 head 0") {
		t.Errorf("head t0 after refused appends: %s, want head 0", r)
	}
}

// workload is what the test wrote and had acknowledged.
type workload struct {
	c     *cluster
	acked map[string][]string // timeline -> payloads by seq-1
	sends []sent
}

type sent struct {
	conversation, text, from string
	to                       []string
	seq                      uint64
}

// append appends through syncctl with an idempotency key, retrying a
// failed run with the same key until within: a run that failed after its
// entry committed is then answered from the dedupe table, so the entry is
// acknowledged once with one seq.
func (w *workload) append(ctx context.Context, t *testing.T, tl, text string, within time.Duration) {
	t.Helper()
	key := fmt.Sprintf("%s-%d", tl, len(w.acked[tl])+1)
	var got struct {
		Seq uint64 `json:"seq"`
	}
	waitFor(ctx, t, within, 200*time.Millisecond, "append "+tl+" "+text, func() error {
		r := w.c.ctl(ctx, w.c.token("app"), "append", tl, text, "--key", key, "--json")
		if r.err != nil {
			return r.failure("syncctl append")
		}
		return json.Unmarshal([]byte(r.stdout), &got)
	})
	if want := uint64(len(w.acked[tl]) + 1); got.Seq != want {
		t.Fatalf("append %s %q: seq %d, want %d (this test is the timeline's only writer)", tl, text, got.Seq, want)
	}
	w.acked[tl] = append(w.acked[tl], text)
}

func (w *workload) send(ctx context.Context, t *testing.T, conv, text, from, to string, within time.Duration) {
	t.Helper()
	key := fmt.Sprintf("%s-%d", conv, len(w.sends)+1)
	var got struct {
		Seq uint64 `json:"seq"`
	}
	waitFor(ctx, t, within, 200*time.Millisecond, "send "+conv, func() error {
		r := w.c.ctl(ctx, w.c.token("app"), "send", conv, text, "--from", from, "--to", to, "--key", key, "--json")
		if r.err != nil {
			return r.failure("syncctl send")
		}
		return json.Unmarshal([]byte(r.stdout), &got)
	})
	if want := uint64(len(w.sends) + 1); got.Seq != want {
		t.Fatalf("send %s: conversation seq %d, want %d", conv, got.Seq, want)
	}
	w.sends = append(w.sends, sent{conv, text, from, strings.Split(to, ","), got.Seq})
}

// pullView is the part of `syncctl pull --json` the test reads.
type pullView struct {
	HeadSeq uint64 `json:"head_seq"`
	Entries []struct {
		Seq             uint64 `json:"seq"`
		Payload         string `json:"payload"`
		Sender          string `json:"sender"`
		Conversation    string `json:"conversation"`
		ConversationSeq uint64 `json:"conversation_seq"`
	} `json:"entries"`
}

// checkPulls pulls every timeline through syncctl (linearizable, with the
// reader token) and compares it with what was acknowledged; every member
// of every send, the sender too, gets the message (delivery follows the
// send, so it is waited for).
func (w *workload) checkPulls(ctx context.Context, t *testing.T) {
	t.Helper()
	for tl, want := range w.acked {
		var v pullView
		r := w.c.ctl(ctx, w.c.token("reader"), "pull", tl, "--json")
		if r.err != nil {
			t.Fatalf("pull %s: %s", tl, r)
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("pull %s: %v in %q", tl, err, r.stdout)
		}
		if v.HeadSeq != uint64(len(want)) || len(v.Entries) != len(want) {
			t.Fatalf("pull %s: head %d with %d entries, want %d", tl, v.HeadSeq, len(v.Entries), len(want))
		}
		for i, e := range v.Entries {
			if e.Seq != uint64(i+1) || e.Payload != want[i] {
				t.Fatalf("pull %s: entry %d is seq %d %q, want seq %d %q", tl, i, e.Seq, e.Payload, i+1, want[i])
			}
		}
	}
	for _, s := range w.sends {
		for _, member := range append([]string{s.from}, s.to...) {
			waitFor(ctx, t, 30*time.Second, 200*time.Millisecond, fmt.Sprintf("%s #%d delivered to %s", s.conversation, s.seq, member), func() error {
				var v pullView
				r := w.c.ctl(ctx, w.c.token("reader"), "pull", member, "--json")
				if r.err != nil {
					return r.failure("syncctl pull " + member)
				}
				if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
					return err
				}
				for _, e := range v.Entries {
					if e.Conversation == s.conversation && e.ConversationSeq == s.seq && e.Sender == s.from && e.Payload == s.text {
						return nil
					}
				}
				return fmt.Errorf("not in %s's timeline: %+v", member, v.Entries)
			})
		}
	}
}

// checkEveryReplica reads every timeline from each node's own replica
// (stale reads sent to that node alone, with the app client certificate):
// each holds every acknowledged entry, n1 included after its restart.
func (w *workload) checkEveryReplica(ctx context.Context, t *testing.T) {
	t.Helper()
	for i, n := range nodes {
		cl := syncv1.NewSyncClient(w.c.dial(i, "app"))
		for tl, want := range w.acked {
			waitFor(ctx, t, 30*time.Second, 200*time.Millisecond, fmt.Sprintf("%s's replica of %s", n, tl), func() error {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				resp, err := cl.Pull(pctx, &syncv1.PullRequest{
					Timeline: proto.String(tl), AfterSeq: proto.Uint64(0), Limit: proto.Uint32(1000),
					Consistency: syncv1.Consistency_CONSISTENCY_STALE.Enum(),
				})
				if err != nil {
					return err
				}
				if len(resp.GetEntries()) != len(want) {
					return fmt.Errorf("%d entries, want %d", len(resp.GetEntries()), len(want))
				}
				for k, e := range resp.GetEntries() {
					if e.GetSeq() != uint64(k+1) || string(e.GetPayload()) != want[k] {
						return fmt.Errorf("entry %d is seq %d %q, want seq %d %q", k, e.GetSeq(), e.GetPayload(), k+1, want[k])
					}
				}
				return nil
			})
		}
	}
}
