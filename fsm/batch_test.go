package fsm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func batchCmd(now int64, appends ...*fsmpb.Command) *fsmpb.Command {
	b := &fsmpb.AppendBatch{}
	for _, c := range appends {
		b.Appends = append(b.Appends, c.GetAppend())
	}
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_AppendBatch{AppendBatch: b}}
}

func TestAppendBatchAppliesEachAppendAsItsOwnEntryWould(t *testing.T) {
	h := newHarness(t)
	res := h.apply(batchCmd(10,
		appendCmd("a", "1", "k1", 0),
		appendCmd("a", "2", "k2", 0),
		appendCmd("", "bad", "", 0), // refused alone; the rest go on
		appendCmd("a", "1-again", "k1", 0),
		appendCmd("b", "1", "", 0),
		appendCmd("a", "3", "", 0),
	))[0]
	if res.Err != nil || len(res.Batch) != 6 {
		t.Fatalf("batch: err %v, %d outcomes", res.Err, len(res.Batch))
	}
	want := []struct {
		seq   uint64
		dedup bool
		err   error
	}{{1, false, nil}, {2, false, nil}, {0, false, ErrInvalidArgument}, {1, true, nil}, {1, false, nil}, {3, false, nil}}
	for i, w := range want {
		it := res.Batch[i]
		if w.err != nil {
			if !errors.Is(it.Err, w.err) || it.Append != nil {
				t.Fatalf("append %d: %+v, want error %v", i, it, w.err)
			}
			continue
		}
		if it.Err != nil || it.Append.Seq != w.seq || it.Append.Deduplicated != w.dedup || it.Append.TsMs != 10 {
			t.Fatalf("append %d: %+v err %v, want seq %d dedup %v", i, it.Append, it.Err, w.seq, w.dedup)
		}
	}
	if got := h.f.AppliedIndex(); got != 1 {
		t.Fatalf("applied index %d, want 1: a batch is one log entry", got)
	}
}

// The same appends, batched or one entry each, leave the same timelines.
func TestAppendBatchLeavesTheStateOfSingleAppends(t *testing.T) {
	single, batched := newHarness(t), newHarness(t)
	var appends []*fsmpb.Command
	for i := range 40 {
		appends = append(appends, appendCmd(fmt.Sprintf("t%d", i%4), fmt.Sprint(i), fmt.Sprintf("k%d", i%30), 100))
	}
	for _, c := range appends {
		single.apply(c)
	}
	batched.apply(batchCmd(100, appends[:25]...), batchCmd(100, appends[25:]...))
	for i := range 4 {
		tl := fmt.Sprintf("t%d", i)
		a, b := single.pullAll(tl), batched.pullAll(tl)
		if len(a) != len(b) || len(a) == 0 {
			t.Fatalf("%s: %d entries one by one, %d batched", tl, len(a), len(b))
		}
		for j := range a {
			if a[j].Seq != b[j].Seq || string(a[j].Payload) != string(b[j].Payload) {
				t.Fatalf("%s entry %d: %d %q one by one, %d %q batched", tl, j, a[j].Seq, a[j].Payload, b[j].Seq, b[j].Payload)
			}
		}
	}
}

func TestAppendBatchBounds(t *testing.T) {
	over := make([]*fsmpb.Command, MaxBatchAppends+1)
	for i := range over {
		over[i] = appendCmd("a", "x", "", 0)
	}
	for _, tc := range []struct {
		name string
		cmd  *fsmpb.Command
	}{
		{"empty", batchCmd(1)},
		{"over the limit", batchCmd(1, over...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.apply(tc.cmd)[0]
			if !errors.Is(res.Err, ErrInvalidArgument) {
				t.Fatalf("err %v, want InvalidArgument", res.Err)
			}
			if len(h.pullAll("a")) != 0 {
				t.Fatal("a refused batch stored entries")
			}
		})
	}
}
