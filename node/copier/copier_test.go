package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeGroup struct {
	mu   sync.Mutex
	jobs []*fsmpb.CopyJob
	done []string
}

func (g *fakeGroup) ReadyLeader() bool { return true }

func (g *fakeGroup) Jobs(limit int) ([]*fsmpb.CopyJob, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.jobs[:min(limit, len(g.jobs))], nil
}

func (g *fakeGroup) Done(_ context.Context, source string, version uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = append(g.done, fmt.Sprint(source, "@", version))
	for i, j := range g.jobs {
		if j.GetSource() == source && j.GetVersion() == version {
			g.jobs = append(g.jobs[:i], g.jobs[i+1:]...)
			break
		}
	}
	return nil
}

// fakeRouter: collections "a*" are group 1, the rest group 2; group 2
// fails while down is set.
type fakeRouter struct {
	down  bool
	calls []string
}

func (r *fakeRouter) GroupFor(c string) (shard.GroupID, error) {
	if c[0] == 'a' {
		return 1, nil
	}
	return 2, nil
}

func (r *fakeRouter) Copy(_ context.Context, g shard.GroupID, items []*fsmpb.CopyItem) error {
	if g == 2 && r.down {
		return errors.New("group 2 unreachable")
	}
	r.calls = append(r.calls, fmt.Sprintf("g%d:%d@%d", g, len(items), items[0].GetSourceVersion()))
	return nil
}

func job(source string, version uint64, targets ...string) *fsmpb.CopyJob {
	return &fsmpb.CopyJob{Source: source, Version: version, Items: []*fsmpb.CopyJobItem{{TargetKey: "k", Value: []byte("v"), Targets: targets}}}
}

func TestPassMakesJobsInOrderAndSkipsASourceAfterAFailure(t *testing.T) {
	g := &fakeGroup{jobs: []*fsmpb.CopyJob{job("p", 1, "a1", "b1"), job("p", 2, "a1"), job("q", 1, "a2")}}
	r := &fakeRouter{down: true}
	c := New(g, r, slog.New(slog.DiscardHandler), nil)
	if c.pass(context.Background(), g.jobs) {
		t.Fatal("a pass with a failed job reported success")
	}
	// p@1 failed at group 2, so p@2 waits; q@1 goes on.
	if fmt.Sprint(g.done) != "[q@1]" || fmt.Sprint(r.calls) != "[g1:1@1 g1:1@1]" {
		t.Fatalf("done %v, calls %v", g.done, r.calls)
	}
	r.down = false
	jobs, _ := g.Jobs(10)
	if !c.pass(context.Background(), jobs) || fmt.Sprint(g.done) != "[q@1 p@1 p@2]" {
		t.Fatalf("after the heal: done %v", g.done)
	}
}

func TestMakeSplitsBigJobsByGroupAndBound(t *testing.T) {
	var targets []string
	for i := range fsm.MaxCopyItems + 5 {
		targets = append(targets, fmt.Sprint("a", i))
	}
	targets = append(targets, "b1")
	g := &fakeGroup{jobs: []*fsmpb.CopyJob{job("p", 3, targets...)}}
	r := &fakeRouter{}
	if err := New(g, r, slog.New(slog.DiscardHandler), nil).make(context.Background(), g.jobs[0]); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("[g1:%d@3 g1:5@3 g2:1@3]", fsm.MaxCopyItems); fmt.Sprint(r.calls) != want {
		t.Fatalf("calls %v, want %s", r.calls, want)
	}
}
