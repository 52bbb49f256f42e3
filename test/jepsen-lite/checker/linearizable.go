package checker

import (
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// The model is a timeline as a sequential object, judged against the order
// its entries finally have. Timelines are append-only, so every state a
// valid linearization passes through is a prefix of that final order: the
// state is just the prefix length, and an append is legal only where its
// key is next. That keeps each step O(1) (the naive model, a slice of keys,
// is O(head) per step and did not finish on a ten-minute history) and
// prunes every order the replicas contradict.
var timelineModel = porcupine.Model{
	Init: func() any { return uint64(0) },
	Step: func(st, in, out any) (bool, any) {
		n, i := st.(uint64), in.(input)
		switch i.kind {
		case history.Append:
			o, known := out.(output)
			switch {
			case i.pos == 0 || i.pos > n+1:
				// Not in the final order, or not next: it cannot take effect now.
				return false, n
			case i.pos <= n:
				// Applied already (a retry answered "deduplicated"): the answer,
				// if any, names the original seq.
				return !known || o.seq == i.pos, n
			default:
				return !known || o.seq == i.pos, n + 1
			}
		case history.Head:
			return out.(output).head == n, n
		case history.Pull:
			o := out.(output)
			return i.pullMatches && o.head == n && i.after+o.entries <= n, n
		}
		return false, n
	},
	Hash: func(st any) uint64 { return st.(uint64) },
	DescribeOperation: func(in, out any) string {
		i := in.(input)
		o, known := out.(output)
		switch {
		case i.kind == history.Append && known:
			return fmt.Sprintf("append(%s) -> %d [final seq %d]", i.key, o.seq, i.pos)
		case i.kind == history.Append:
			return fmt.Sprintf("append(%s) -> ? [final seq %d]", i.key, i.pos)
		case i.kind == history.Head:
			return fmt.Sprintf("head() -> %d", o.head)
		}
		return fmt.Sprintf("pull(after %d) -> %d entries, head %d (match final: %v)", i.after, o.entries, o.head, i.pullMatches)
	},
	DescribeState: func(st any) string { return fmt.Sprintf("head %d", st.(uint64)) },
}

type input struct {
	kind  history.Kind
	key   string
	pos   uint64 // an append's seq in the final order; 0 if absent
	after uint64
	// pullMatches: a pull's entries are the final order's entries
	// after+1..after+len (their keys, seqs and payloads).
	pullMatches bool
}

type output struct {
	seq     uint64
	head    uint64
	entries uint64
}

// unknownOutput marks an append whose outcome the client never learned.
type unknownOutput struct{}

// Linearizable checks, timeline by timeline, that the appends and the
// linearizable reads (Head, Pull) of the history are linearizable with
// respect to the order the timeline finally has (the first replica's copy
// in f; the replicas checker compares the copies). Failed operations are
// left out (they did not happen); an append with an unknown outcome may
// have happened at any time after its invocation, or not at all if no
// replica holds it. budget bounds the whole check: a timeline left
// undecided when it runs out is reported as a problem.
func Linearizable(ops []history.Op, f history.Final, budget time.Duration) Verdict {
	v := Verdict{Checker: "linearizable", Valid: true}
	order := finalOrder(f)
	byTimeline := map[string][]porcupine.Operation{}
	unread := map[string]bool{}
	for _, op := range ops {
		if op.Outcome == history.Fail || (!op.Kind.Writes() && op.Outcome != history.OK) || !op.Kind.OnTimeline() {
			continue
		}
		fin, ok := order[op.Timeline]
		if !ok {
			unread[op.Timeline] = true
			continue
		}
		in := input{kind: op.Kind, key: op.Key, after: op.After}
		if op.Kind == history.Send {
			in.kind = history.Append // on its conversation, a send is an append
		}
		p := porcupine.Operation{ClientId: op.Process, Call: op.Invoke, Return: op.Complete}
		switch {
		case in.kind == history.Append:
			in.pos = fin.seqOf[op.Key]
			if op.Outcome == history.Unknown {
				if in.pos == 0 {
					continue // it never took effect: no replica holds it
				}
				p.Output, p.Return = unknownOutput{}, math.MaxInt64
			} else {
				p.Output = output{seq: op.Seq}
			}
		case op.Kind == history.Pull:
			in.pullMatches = fin.holds(op.After, op.Entries)
			p.Output = output{head: op.HeadSeq, entries: uint64(len(op.Entries))}
		default:
			p.Output = output{head: op.HeadSeq}
		}
		p.Input = in
		byTimeline[op.Timeline] = append(byTimeline[op.Timeline], p)
	}

	for _, tl := range slices.Sorted(maps.Keys(unread)) {
		v.problem("%s: no replica's final copy was read, so its history cannot be judged", tl)
	}

	deadline := time.Now().Add(budget)
	timelines := slices.Sorted(maps.Keys(byTimeline))
	results := make([]porcupine.CheckResult, len(timelines))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				left := time.Until(deadline)
				if left <= 0 {
					results[i] = porcupine.Unknown
					continue
				}
				results[i] = porcupine.CheckOperationsTimeout(timelineModel, byTimeline[timelines[i]], left)
			}
		})
	}
	for i := range timelines {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, tl := range timelines {
		switch results[i] {
		case porcupine.Ok:
		case porcupine.Illegal:
			v.problem("%s: the appends and reads of this timeline are not linearizable", tl)
		default:
			v.problem("%s: undecided within the %s budget", tl, budget)
		}
	}
	return v
}

// timelineOrder is one timeline's entries as finally read.
type timelineOrder struct {
	entries []history.Entry
	seqOf   map[string]uint64 // key -> its first seq
}

// holds reports whether the entries are the order's entries after+1 onwards.
func (o timelineOrder) holds(after uint64, entries []history.Entry) bool {
	if after+uint64(len(entries)) > uint64(len(o.entries)) {
		return false
	}
	return slices.Equal(entries, o.entries[after:after+uint64(len(entries))])
}

// finalOrder takes, for every timeline, the copy of the first replica (in
// node order) that holds it.
func finalOrder(f history.Final) map[string]timelineOrder {
	out := map[string]timelineOrder{}
	for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
		for tl, entries := range f.Timelines[node] {
			if _, ok := out[tl]; ok {
				continue
			}
			o := timelineOrder{entries: entries, seqOf: make(map[string]uint64, len(entries))}
			for i, e := range entries {
				if _, dup := o.seqOf[e.Key]; !dup {
					o.seqOf[e.Key] = uint64(i + 1)
				}
			}
			out[tl] = o
		}
	}
	return out
}
