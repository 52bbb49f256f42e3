package checker

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// timelineModel is a timeline as a sequential object: its state is the
// idempotency keys of its entries in seq order. Appends of one key are one
// logical operation (retries included), so a key is appended at most once.
var timelineModel = porcupine.Model{
	Init: func() any { return []string(nil) },
	Step: func(st, in, out any) (bool, any) {
		state, i := st.([]string), in.(input)
		switch i.kind {
		case history.Append:
			if at := slices.Index(state, i.key); at >= 0 {
				// Applied already: the answer, if any, names the original seq.
				o, known := out.(output)
				return !known || o.seq == uint64(at+1), state
			}
			next := append(slices.Clip(state), i.key)
			o, known := out.(output)
			return !known || o.seq == uint64(len(next)), next
		case history.Head:
			return out.(output).head == uint64(len(state)), state
		case history.Pull:
			o := out.(output)
			if o.head != uint64(len(state)) || i.after+uint64(len(o.keys)) > uint64(len(state)) {
				return false, state
			}
			return slices.Equal(o.keys, state[i.after:i.after+uint64(len(o.keys))]), state
		}
		return false, state
	},
	Equal: func(a, b any) bool { return slices.Equal(a.([]string), b.([]string)) },
	Hash: func(st any) uint64 {
		h := fnv.New64a()
		for _, k := range st.([]string) {
			h.Write([]byte(k))
			h.Write([]byte{0})
		}
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string {
		i := in.(input)
		o, known := out.(output)
		switch {
		case i.kind == history.Append && known:
			return fmt.Sprintf("append(%s) -> %d", i.key, o.seq)
		case i.kind == history.Append:
			return fmt.Sprintf("append(%s) -> ?", i.key)
		case i.kind == history.Head:
			return fmt.Sprintf("head() -> %d", o.head)
		}
		return fmt.Sprintf("pull(%d) -> %v (head %d)", i.after, o.keys, o.head)
	},
	DescribeState: func(st any) string { return "[" + strings.Join(st.([]string), " ") + "]" },
}

type input struct {
	kind     history.Kind
	timeline string
	key      string
	after    uint64
}

type output struct {
	seq  uint64
	head uint64
	keys []string
}

// unknownOutput marks an append whose outcome the client never learned.
type unknownOutput struct{}

// Linearizable checks, timeline by timeline, that the appends and the
// linearizable reads (Head, Pull) of the history are linearizable. Failed
// operations are left out (they did not happen); an append with an unknown
// outcome may have happened at any time after its invocation. A timeout
// that leaves the answer open is reported as a problem too.
func Linearizable(ops []history.Op, timeout time.Duration) Verdict {
	v := Verdict{Checker: "linearizable", Valid: true}
	byTimeline := map[string][]porcupine.Operation{}
	for _, op := range ops {
		if op.Outcome == history.Fail || (op.Kind != history.Append && op.Outcome != history.OK) {
			continue
		}
		p := porcupine.Operation{
			ClientId: op.Process,
			Input:    input{kind: op.Kind, timeline: op.Timeline, key: op.Key, after: op.After},
			Call:     op.Invoke,
			Return:   op.Complete,
		}
		switch {
		case op.Outcome == history.Unknown:
			p.Output, p.Return = unknownOutput{}, math.MaxInt64
		case op.Kind == history.Pull:
			keys := make([]string, len(op.Entries))
			for i, e := range op.Entries {
				keys[i] = e.Key
			}
			p.Output = output{head: op.HeadSeq, keys: keys}
		default:
			p.Output = output{seq: op.Seq, head: op.HeadSeq}
		}
		byTimeline[op.Timeline] = append(byTimeline[op.Timeline], p)
	}
	for _, tl := range slices.Sorted(maps.Keys(byTimeline)) {
		switch porcupine.CheckOperationsTimeout(timelineModel, byTimeline[tl], timeout) {
		case porcupine.Ok:
		case porcupine.Illegal:
			v.problem("%s: the appends and reads of this timeline are not linearizable", tl)
		default:
			v.problem("%s: undecided within %s", tl, timeout)
		}
	}
	return v
}
