package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gate is a run function that records its batches and holds each until
// released, so a test decides what is in flight.
type gate struct {
	mu      sync.Mutex
	batches [][]int
	started chan int // the size of each batch as it starts
	release chan struct{}
	fail    error
}

func newGate() *gate { return &gate{started: make(chan int, 100), release: make(chan struct{}, 100)} }

func (g *gate) run(reqs []int) ([]Outcome[int], error) {
	g.mu.Lock()
	g.batches = append(g.batches, append([]int(nil), reqs...))
	g.mu.Unlock()
	g.started <- len(reqs)
	<-g.release
	if g.fail != nil {
		return nil, g.fail
	}
	outs := make([]Outcome[int], len(reqs))
	for i, r := range reqs {
		if r < 0 {
			outs[i].Err = fmt.Errorf("negative %d", r)
		} else {
			outs[i].Res = r * 10
		}
	}
	return outs, nil
}

func newBatcher(t *testing.T, limits Limits, g *gate) *Batcher[int, int] {
	t.Helper()
	b, err := New(limits, func(r int) int { return max(r, 1) }, g.run)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(g.release) // let whatever is in flight finish
		b.Close()
	})
	return b
}

var roomy = Limits{MaxItems: 100, MaxBytes: 1 << 20, MaxInFlight: 1, Queue: 100}

type result struct {
	req, res int
	err      error
}

// doAll starts a Do for each request, one after another so their queue
// order is known, and returns a channel of their results.
func doAll(t *testing.T, ctx context.Context, b *Batcher[int, int], reqs ...int) <-chan result {
	t.Helper()
	out := make(chan result, len(reqs))
	for _, r := range reqs {
		want := b.queuedCount() + 1
		go func() {
			res, err := b.Do(ctx, r)
			out <- result{r, res, err}
		}()
		testutil.Eventually(t, 5*time.Second, func() error {
			if b.queuedCount() < want {
				return fmt.Errorf("request %d not queued", r)
			}
			return nil
		})
	}
	return out
}

// recv takes the next result, failing the test rather than hanging.
func recv(t *testing.T, c <-chan result) result {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
		return result{}
	}
}

func waitStarted(t *testing.T, g *gate) int {
	t.Helper()
	select {
	case n := <-g.started:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no batch started")
		return 0
	}
}

func TestLoneRequestGoesAtOnce(t *testing.T) {
	g := newGate()
	b := newBatcher(t, roomy, g)
	g.release <- struct{}{}
	res, err := b.Do(context.Background(), 4)
	if err != nil || res != 40 {
		t.Fatalf("Do(4) = %d, %v", res, err)
	}
	if n := waitStarted(t, g); n != 1 {
		t.Fatalf("batch of %d, want 1", n)
	}
}

func TestRequestsArrivingDuringABatchFormTheNextInOrder(t *testing.T) {
	g := newGate()
	b := newBatcher(t, roomy, g)
	first := doAll(t, context.Background(), b, 1)
	waitStarted(t, g) // 1 is in flight: the rest queue
	rest := doAll(t, context.Background(), b, 2, 3, -4, 5)
	g.release <- struct{}{}
	g.release <- struct{}{}
	if n := waitStarted(t, g); n != 4 {
		t.Fatalf("second batch of %d, want 4", n)
	}
	if r := recv(t, first); r.res != 10 || r.err != nil {
		t.Fatalf("first: %+v", r)
	}
	for range 4 {
		r := recv(t, rest)
		switch {
		case r.req < 0 && r.err == nil:
			t.Fatalf("%d: no error of its own", r.req)
		case r.req >= 0 && (r.err != nil || r.res != r.req*10):
			t.Fatalf("%d: got %d, %v", r.req, r.res, r.err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if got := fmt.Sprint(g.batches); got != "[[1] [2 3 -4 5]]" {
		t.Fatalf("batches %s", got)
	}
}

func TestBatchLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits Limits
		reqs   []int
		want   string
	}{
		{"items", Limits{MaxItems: 2, MaxBytes: 100, MaxInFlight: 1, Queue: 10}, []int{1, 2, 3, 4, 5}, "[[0] [1 2] [3 4] [5]]"},
		{"bytes", Limits{MaxItems: 10, MaxBytes: 10, MaxInFlight: 1, Queue: 10}, []int{4, 5, 3, 9, 20, 1}, "[[0] [4 5] [3] [9] [20] [1]]"},
		{"in flight", Limits{MaxItems: 10, MaxBytes: 100, MaxInFlight: 2, Queue: 10}, []int{1, 2, 3}, "[[0] [1] [2 3]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate()
			b := newBatcher(t, tc.limits, g)
			head := doAll(t, context.Background(), b, 0)
			waitStarted(t, g)
			if tc.limits.MaxInFlight == 2 { // a second batch takes the next request alone
				doAll(t, context.Background(), b, tc.reqs[0])
				waitStarted(t, g)
				tc.reqs = tc.reqs[1:]
			}
			out := doAll(t, context.Background(), b, tc.reqs...)
			for range 10 {
				g.release <- struct{}{}
			}
			recv(t, head)
			for range tc.reqs {
				if r := recv(t, out); r.err != nil {
					t.Fatalf("%d: %v", r.req, r.err)
				}
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if got := fmt.Sprint(g.batches); got != tc.want {
				t.Fatalf("batches %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCanceledWhileQueuedIsNotSent(t *testing.T) {
	g := newGate()
	b := newBatcher(t, roomy, g)
	head := doAll(t, context.Background(), b, 1)
	waitStarted(t, g)
	ctx, cancel := context.WithCancel(context.Background())
	canceled := doAll(t, ctx, b, 2)
	kept := doAll(t, context.Background(), b, 3)
	cancel()
	if r := recv(t, canceled); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("canceled request: %+v", r)
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	recv(t, head)
	if r := recv(t, kept); r.err != nil || r.res != 30 {
		t.Fatalf("kept request: %+v", r)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if got := fmt.Sprint(g.batches); got != "[[1] [3]]" {
		t.Fatalf("batches %s: the canceled request was run", got)
	}
}

func TestRunErrorFailsItsWholeBatch(t *testing.T) {
	g := newGate()
	g.fail = errors.New("disk on fire")
	b := newBatcher(t, roomy, g)
	head := doAll(t, context.Background(), b, 1)
	waitStarted(t, g)
	out := doAll(t, context.Background(), b, 2, 3)
	g.release <- struct{}{}
	g.release <- struct{}{}
	for _, c := range []<-chan result{head, out, out} {
		if r := recv(t, c); !errors.Is(r.err, g.fail) {
			t.Fatalf("%d: err %v", r.req, r.err)
		}
	}
}

func TestCloseAnswersQueuedAndRefusesNew(t *testing.T) {
	g := newGate()
	b, err := New(roomy, func(int) int { return 1 }, g.run)
	if err != nil {
		t.Fatal(err)
	}
	head := doAll(t, context.Background(), b, 1)
	waitStarted(t, g)
	queued := doAll(t, context.Background(), b, 2, 3)
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned with a batch still running")
	case <-time.After(20 * time.Millisecond):
	}
	close(g.release)
	<-closed
	if r := recv(t, head); r.err != nil || r.res != 10 {
		t.Fatalf("in-flight request: %+v", r)
	}
	for range 2 {
		if r := recv(t, queued); !errors.Is(r.err, ErrClosed) {
			t.Fatalf("queued request %d: %v, want ErrClosed", r.req, r.err)
		}
	}
	if _, err := b.Do(context.Background(), 9); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
}

// Many callers at once: each gets its own answer exactly once.
func TestConcurrentCallersGetTheirOwnAnswers(t *testing.T) {
	b, err := New(Limits{MaxItems: 7, MaxBytes: 1 << 20, MaxInFlight: 2, Queue: 1000}, func(int) int { return 1 },
		func(reqs []int) ([]Outcome[int], error) {
			outs := make([]Outcome[int], len(reqs))
			for i, r := range reqs {
				outs[i].Res = r * 10
			}
			return outs, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range 1000 {
		wg.Go(func() {
			if res, err := b.Do(context.Background(), i); err != nil || res != i*10 {
				errs <- fmt.Errorf("Do(%d) = %d, %v", i, res, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNewRefusesZeroLimits(t *testing.T) {
	if _, err := New(Limits{MaxItems: 1, MaxBytes: 1, MaxInFlight: 0, Queue: 1}, func(int) int { return 1 },
		func([]int) ([]Outcome[int], error) { return nil, nil }); err == nil {
		t.Fatal("no error for MaxInFlight 0")
	}
}

func TestAFullQueueRefusesAndRunsNothing(t *testing.T) {
	g := newGate()
	b := newBatcher(t, Limits{MaxItems: 10, MaxBytes: 100, MaxInFlight: 1, Queue: 1}, g)
	head := doAll(t, context.Background(), b, 1)
	waitStarted(t, g)
	queued := doAll(t, context.Background(), b, 2)
	if _, err := b.Do(context.Background(), 3); !errors.Is(err, ErrNotSent) {
		t.Fatalf("Do with a full queue: %v, want ErrNotSent", err)
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	recv(t, head)
	if r := recv(t, queued); r.err != nil {
		t.Fatalf("queued request: %+v", r)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if got := fmt.Sprint(g.batches); got != "[[1] [2]]" {
		t.Fatalf("batches %s", got)
	}
}
