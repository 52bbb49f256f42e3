package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// TestSubscribeDelivery drives fake nodes through the server's events and
// checks the consumer sees each seq once, in order.
func TestSubscribeDelivery(t *testing.T) {
	cases := []struct {
		name  string
		opts  SubscribeOptions
		setup func(h *harness) // before Subscribe
		run   func(t *testing.T, h *harness)
	}{{
		name: "backlog then live entries, in order",
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 0)
			r := h.a.next(t)
			if got := adds(r.req); !slices.Equal(got, []string{"t>0"}) || r.req.GetNotifyOnly() {
				t.Fatalf("first request adds %q (notify_only %v); want t>0 for entries", got, r.req.GetNotifyOnly())
			}
			r.st.send(t, entries("t", 1, 3)...)
			h.expect(t, seqs("t", 1, 3)...)
			r.st.send(t, heartbeat(), entry("t", 4), entry("t", 5))
			h.expect(t, seqs("t", 4, 5)...)
		},
	}, {
		name: "seqs at or below the last delivered are dropped",
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 2)
			r := h.a.nextAdd(t)
			r.st.send(t, entry("t", 1), entry("t", 2), entry("t", 3), entry("t", 3), entry("t", 2), entry("t", 4))
			h.expect(t, "t:3", "t:4")
		},
	}, {
		name: "a Gap is filled by Pull from the last seq, then the timeline is added after it",
		run: func(t *testing.T, h *harness) {
			h.log.page = 4
			h.log.append("t", 10)
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			r.st.send(t, entry("t", 1), entry("t", 2), gapEvent("t", 3))
			h.expect(t, seqs("t", 1, 10)...)
			r = h.a.nextAdd(t)
			if got := adds(r.req); !slices.Equal(got, []string{"t>10"}) {
				t.Fatalf("re-added %q; want t>10", got)
			}
			if pulls, _ := h.log.calls(); !slices.Equal(pulls, []string{"t>2", "t>6"}) {
				t.Fatalf("pulled %q; want pages after 2 and 6", pulls)
			}
			r.st.send(t, entry("t", 10), entry("t", 11))
			h.expect(t, "t:11")
		},
	}, {
		name: "a seq past last+1 is a hole: remove, pull it, add again",
		run: func(t *testing.T, h *harness) {
			h.log.append("t", 6)
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			r.st.send(t, entry("t", 1), entry("t", 2), entry("t", 5))
			h.expect(t, seqs("t", 1, 6)...)
			var removed bool
			for {
				r = h.a.next(t)
				removed = removed || slices.Contains(r.req.GetRemove(), "t")
				if len(r.req.GetAdd()) > 0 {
					break
				}
			}
			if got := adds(r.req); !removed || !slices.Equal(got, []string{"t>6"}) {
				t.Fatalf("removed %v, then added %q; want a remove, then t>6", removed, got)
			}
			if pulls, _ := h.log.calls(); !slices.Equal(pulls, []string{"t>2"}) {
				t.Fatalf("pulled %q; want after 2", pulls)
			}
			r.st.send(t, entry("t", 7))
			h.expect(t, "t:7")
		},
	}, {
		name: "Moved: added again at the leader it names, after the last seq",
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			r.st.send(t, entry("t", 1), movedEvent("t", h.b.addr), entry("t", 2))
			h.expect(t, "t:1")
			r = h.b.nextAdd(t)
			if got := adds(r.req); !slices.Equal(got, []string{"t>1"}) {
				t.Fatalf("b got adds %q; want t>1", got)
			}
			r.st.send(t, entries("t", 1, 3)...)
			h.expect(t, "t:2", "t:3")
		},
	}, {
		name:  "with a shard map, adds go to the group's node",
		setup: func(h *harness) { h.a.setShardMap(1, h.b.addr) },
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 4)
			r := h.b.nextAdd(t)
			if got := adds(r.req); !slices.Equal(got, []string{"t>4"}) {
				t.Fatalf("b got adds %q; want t>4", got)
			}
			r.st.send(t, entry("t", 5))
			h.expect(t, "t:5")
		},
	}, {
		name:  "Moved without a leader: re-routed by a fresh shard map",
		setup: func(h *harness) { h.a.setShardMap(1, h.a.addr) },
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			r.st.send(t, entry("t", 1))
			h.expect(t, "t:1")
			h.a.setShardMap(2, h.b.addr) // the timeline's group changed
			r.st.send(t, &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Moved{Moved: &syncv1.Moved{Timeline: "t", GroupId: 2}}})
			r = h.b.nextAdd(t)
			if got := adds(r.req); !slices.Equal(got, []string{"t>1"}) {
				t.Fatalf("b got adds %q; want t>1", got)
			}
			r.st.send(t, entries("t", 1, 3)...)
			h.expect(t, "t:2", "t:3")
		},
	}, {
		name: "a broken stream resumes from the last seq, nothing twice or missing",
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 0)
			h.add(t, "u", 5)
			r := h.a.nextAdd(t)
			if got := adds(r.req); !slices.Equal(got, []string{"t>0", "u>5"}) {
				// The two adds may come in two requests.
				r2 := h.a.nextAdd(t)
				got = slices.Sorted(slices.Values(append(got, adds(r2.req)...)))
				if !slices.Equal(got, []string{"t>0", "u>5"}) {
					t.Fatalf("adds %q; want t>0 and u>5", got)
				}
			}
			r.st.send(t, entries("t", 1, 3)...)
			h.expect(t, seqs("t", 1, 3)...)
			r.st.fail(status.Error(codes.Unavailable, "node going down"))
			var again []string
			for len(again) < 2 {
				r = h.a.nextAdd(t)
				again = append(again, adds(r.req)...)
			}
			if slices.Sort(again); !slices.Equal(again, []string{"t>3", "u>5"}) {
				t.Fatalf("re-added %q; want t>3 and u>5", again)
			}
			r.st.send(t, entry("t", 2), entry("t", 3), entry("u", 6), entry("t", 4), entry("t", 5))
			h.expect(t, "u:6", "t:4", "t:5")
		},
	}, {
		name: "Reset is passed on and delivery goes on from oldest_seq",
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			r.st.send(t, resetEvent("t", 5), entry("t", 5), entry("t", 6), resetEvent("t", 7), entry("t", 7))
			h.expect(t, "t:reset@5", "t:5", "t:6", "t:7")
		},
	}, {
		name: "a Pull that finds the wanted seqs trimmed reports a Reset",
		run: func(t *testing.T, h *harness) {
			h.log.append("t", 8)
			h.log.trim("t", 5)
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			r.st.send(t, gapEvent("t", 1))
			h.expect(t, append([]string{"t:reset@5"}, seqs("t", 5, 8)...)...)
			if got := adds(h.a.nextAdd(t).req); !slices.Equal(got, []string{"t>8"}) {
				t.Fatalf("re-added %q; want t>8", got)
			}
		},
	}, {
		name: "notify only: new heads only, a Gap recovered with Head",
		opts: SubscribeOptions{NotifyOnly: true},
		run: func(t *testing.T, h *harness) {
			h.log.append("t", 9)
			h.add(t, "t", 2)
			r := h.a.nextAdd(t)
			if !r.req.GetNotifyOnly() {
				t.Fatal("the first request does not ask for notify_only")
			}
			r.st.send(t, notification("t", 1), notification("t", 3), notification("t", 3), notification("t", 2), notification("t", 7))
			h.expect(t, "t:head=3", "t:head=7")
			r.st.send(t, gapEvent("t", 8))
			h.expect(t, "t:head=9")
			if got := adds(h.a.nextAdd(t).req); !slices.Equal(got, []string{"t>9"}) {
				t.Fatalf("re-added %q; want t>9", got)
			}
			if pulls, heads := h.log.calls(); len(pulls) != 0 || !slices.Equal(heads, []string{"t"}) {
				t.Fatalf("pulls %q, heads %q; want one Head", pulls, heads)
			}
		},
	}, {
		name: "Remove stops delivery of a timeline",
		run: func(t *testing.T, h *harness) {
			h.add(t, "t", 0)
			r := h.a.nextAdd(t)
			h.add(t, "u", 0)
			h.a.nextAdd(t)
			h.sub.Remove("u")
			for removed := false; !removed; {
				removed = slices.Contains(h.a.next(t).req.GetRemove(), "u")
			}
			r.st.send(t, entry("u", 1), entry("t", 1))
			h.expect(t, "t:1")
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newNodes(t)
			if tc.setup != nil {
				tc.setup(h)
			}
			h.subscribe(t, tc.opts)
			tc.run(t, h)
		})
	}
}

// TestSubscribeCatchUpRetriesWithoutStallingOthers: while a timeline's
// Pulls fail, the other timelines keep flowing; once Pull works again the
// timeline catches up and is added again.
func TestSubscribeCatchUpRetriesWithoutStallingOthers(t *testing.T) {
	h := newHarness(t, SubscribeOptions{})
	h.log.append("t", 5)
	h.add(t, "t", 0)
	h.add(t, "u", 0)
	var r streamReq
	for got := []string{}; len(got) < 2; got = append(got, adds(r.req)...) {
		r = h.a.nextAdd(t)
	}
	h.log.failPulls(status.Error(codes.Internal, "disk on fire"))
	r.st.send(t, entry("t", 1), gapEvent("t", 2), entry("u", 1))
	h.expect(t, "t:1", "u:1")
	waitUntil(t, "the failed Pull retried", func() bool { pulls, _ := h.log.calls(); return len(pulls) >= 3 })
	r.st.send(t, entry("u", 2), entry("u", 3))
	h.expect(t, "u:2", "u:3")
	h.log.failPulls(nil)
	h.expect(t, seqs("t", 2, 5)...)
	if got := adds(h.a.nextAdd(t).req); !slices.Equal(got, []string{"t>5"}) {
		t.Fatalf("re-added %q; want t>5", got)
	}
}

// TestSubscribeBacksOffWhenMovedAgain: a node that answers every add with
// Moved (and no leader) gets adds at a slowing pace, not a storm.
func TestSubscribeBacksOffWhenMovedAgain(t *testing.T) {
	h := newHarness(t, SubscribeOptions{})
	h.add(t, "t", 0)
	n := 0
	for window := time.After(600 * time.Millisecond); ; {
		select {
		case r := <-h.a.reqs:
			if len(r.req.GetAdd()) > 0 {
				n++
				r.st.send(t, &syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Moved{Moved: &syncv1.Moved{Timeline: "t", GroupId: 1}}})
			}
			continue
		case <-window:
		}
		break
	}
	// Backoff 0, 50, 100, 200, 400 ms: about 5 adds in 600 ms.
	if n < 3 || n > 8 {
		t.Fatalf("%d adds in 600ms; want about 5", n)
	}
}

func TestSubscribeAddRefusesInvalidTimelines(t *testing.T) {
	h := newHarness(t, SubscribeOptions{})
	for _, id := range []string{"", strings.Repeat("x", 257), "bad\xff"} {
		if err := h.sub.Add(id, 0); !errors.Is(err, ErrInvalidTimeline) {
			t.Errorf("Add(%q) = %v; want ErrInvalidTimeline", id, err)
		}
	}
	h.add(t, strings.Repeat("x", 256), 0)
	if got := adds(h.a.nextAdd(t).req); !slices.Equal(got, []string{strings.Repeat("x", 256) + ">0"}) {
		t.Fatalf("the server was asked for %q; want the valid id only", got)
	}
}

func TestSubscribeCallerErrorEndsTheSubscription(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		pull bool // answered to the catch-up Pull, not on the stream
	}{{codes.InvalidArgument, false}, {codes.ResourceExhausted, false}, {codes.InvalidArgument, true}} {
		code := tc.code
		t.Run(fmt.Sprintf("%v pull=%v", code, tc.pull), func(t *testing.T) {
			h := newHarness(t, SubscribeOptions{})
			h.add(t, "t", 0)
			st := h.a.nextAdd(t).st
			if tc.pull {
				h.log.failPulls(status.Error(code, "bad timeline"))
				st.send(t, gapEvent("t", 1))
			} else {
				st.fail(status.Error(code, "too many timelines"))
			}
			waitClosed(t, h.sub)
			if status.Code(h.sub.Err()) != code {
				t.Fatalf("Err() = %v; want %v", h.sub.Err(), code)
			}
			if err := h.sub.Add("t", 0); !errors.Is(err, ErrSubscriptionEnded) {
				t.Fatalf("Add after the end = %v; want ErrSubscriptionEnded", err)
			}
		})
	}
}

func TestSubscribeReplacesASilentStream(t *testing.T) {
	h := newHarness(t, SubscribeOptions{StreamSilence: 500 * time.Millisecond})
	h.add(t, "t", 0)
	r := h.a.nextAdd(t)
	r.st.send(t, entry("t", 1))
	h.expect(t, "t:1")
	// Then nothing, not even heartbeats: the client gives up on the stream.
	r2 := h.a.nextAdd(t)
	if r2.st == r.st || !slices.Equal(adds(r2.req), []string{"t>1"}) {
		t.Fatalf("got adds %q (new stream: %v); want t>1 on a new stream", adds(r2.req), r2.st != r.st)
	}
	r2.st.send(t, entry("t", 1), entry("t", 2))
	h.expect(t, "t:2")
}

// TestSubscribeBackpressure checks that a consumer that does not read
// stops the stream (the server's sends block) instead of the client
// buffering without bound, and that everything arrives once it reads.
func TestSubscribeBackpressure(t *testing.T) {
	const n, size = 96, 512 << 10
	h := newHarness(t, SubscribeOptions{Buffer: 1})
	h.add(t, "t", 0)
	r := h.a.nextAdd(t)
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		payload := make([]byte, size)
		for seq := uint64(1); seq <= n; seq++ {
			ev := entry("t", seq)
			ev.GetEntry().Payload = payload
			if err := r.st.trySend(ev); err != nil {
				done <- err
				return
			}
			sent.Add(1)
		}
		done <- nil
	}()
	// Wait until the sends stall: no progress for a while.
	last, stalled := int64(-1), time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(waitFor); ; {
		<-tick.C
		if now := sent.Load(); now != last {
			last, stalled = now, time.Now()
		} else if time.Since(stalled) > 300*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sends never stalled (%d sent)", last)
		}
	}
	// Transport windows (up to 16 MiB with BDP) hold some; not all.
	if last >= n/2 {
		t.Fatalf("%d of %d entries of %d bytes went out to a consumer that does not read", last, n, size)
	}
	h.expect(t, seqs("t", 1, n)...)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSubscribeEndsAllItsGoroutines checks Close and the end of the
// context each leave nothing running.
func TestSubscribeEndsAllItsGoroutines(t *testing.T) {
	for _, how := range []string{"close", "cancel"} {
		t.Run(how, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			log := newFakeLog()
			log.append("t", 3)
			a := startNode(t, log)
			c, err := New([]string{a.addr}, Options{AttemptTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sub, err := c.Subscribe(ctx, SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			h := &harness{log: log, a: a, c: c, sub: sub}
			h.add(t, "t", 0)
			h.add(t, "u", 0)
			r := a.nextAdd(t)
			r.st.send(t, entry("t", 1), gapEvent("t", 2)) // a catch-up in flight or done
			h.expect(t, "t:1")
			if how == "close" {
				if err := sub.Close(); err != nil {
					t.Fatal(err)
				}
				waitClosed(t, sub)
				if err := sub.Err(); err != nil {
					t.Fatalf("Err() after Close = %v; want nil", err)
				}
			} else {
				cancel()
				waitClosed(t, sub)
				if err := sub.Err(); !errors.Is(err, context.Canceled) {
					t.Fatalf("Err() after cancel = %v; want Canceled", err)
				}
				sub.Close()
			}
			c.Close()
			a.stop()
			goleak.VerifyNone(t, before)
		})
	}
}

// waitUntil polls cond until it holds, failing the test after waitFor.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("not %s within %v", what, waitFor)
		}
	}
}

// waitClosed drains Events until it is closed.
func waitClosed(t *testing.T, sub *Subscription) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-sub.Events():
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("events still open after %v", waitFor)
		}
	}
}

var _ syncv1.SyncServer = (*fakeNode)(nil)
