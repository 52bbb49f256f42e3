package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Workload shape: a few hot timelines take half the operations, many cold
// ones the rest; most operations are appends.
const (
	hotTimelines  = 4
	coldTimelines = 120
	// Conversations, each with membersPerConversation of the users.
	conversations          = 6
	users                  = 48
	membersPerConversation = 12
	appendTimeout          = 10 * time.Second // an append still unanswered by then has an unknown outcome
	readTimeout            = 3 * time.Second
)

// recorder collects the history; times are nanoseconds since the run began.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []history.Op
	known map[string]uint64 // timeline -> highest acknowledged seq
}

func newRecorder() *recorder { return &recorder{start: time.Now(), known: map[string]uint64{}} }

func (r *recorder) now() int64 { return time.Since(r.start).Nanoseconds() }

func (r *recorder) add(op history.Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	if op.Kind.Writes() && op.Outcome == history.OK && op.Seq > r.known[op.Timeline] { // timelines only
		r.known[op.Timeline] = op.Seq
	}
}

func (r *recorder) knownSeq(tl string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.known[tl]
}

func (r *recorder) history() []history.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.Op(nil), r.ops...)
}

func timelineName(rng *rand.Rand) string {
	if rng.IntN(2) == 0 {
		return fmt.Sprintf("hot-%d", rng.IntN(hotTimelines))
	}
	return fmt.Sprintf("cold-%d", rng.IntN(coldTimelines))
}

// allTimelines lists every timeline the workload may touch.
func allTimelines() []string {
	var out []string
	for i := range hotTimelines {
		out = append(out, fmt.Sprintf("hot-%d", i))
	}
	for i := range coldTimelines {
		out = append(out, fmt.Sprintf("cold-%d", i))
	}
	for i := range conversations {
		out = append(out, conversationName(i))
	}
	for i := range users {
		out = append(out, userName(i))
	}
	return out
}

func conversationName(i int) string { return fmt.Sprintf("conv-%d", i) }
func userName(i int) string         { return fmt.Sprintf("user-%d", i) }

// members of conversation i: a fixed set of users, overlapping with other
// conversations', so a user timeline interleaves several conversations.
func members(i int) []string {
	out := make([]string, membersPerConversation)
	for j := range out {
		out[j] = userName((i*7 + j*3) % users)
	}
	return out
}

// runWorkload runs workers until ctx ends, each recording its operations.
func runWorkload(ctx context.Context, cl *client.Client, workers int, seed uint64, rec *recorder) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			dev := newDevice()
			ss := newSessions()
			for i := 0; ctx.Err() == nil; i++ {
				tl := timelineName(rng)
				switch n := rng.IntN(17); {
				case n >= 14: // a device logs in or out, acks or reads
					doSessionOp(cl, rec, w, rng, ss, fmt.Sprintf("w%d-%d", w, i))
				case n >= 12: // a device catches up on a hot collection
					doRecordSync(cl, rec, w, dev, fmt.Sprintf("col-hot-%d", rng.IntN(hotCollections)))
				case n >= 10:
					doRecordWrite(cl, rec, w, rng, collectionName(rng), fmt.Sprintf("w%d-%d", w, i))
				case n < 6:
					doAppend(cl, rec, w, tl, fmt.Sprintf("w%d-%d", w, i))
				case n < 7:
					c := rng.IntN(conversations)
					ms := members(c)
					doSend(cl, rec, w, conversationName(c), ms[rng.IntN(len(ms))], ms, fmt.Sprintf("w%d-%d", w, i))
				case n < 8:
					doHead(cl, rec, w, tl)
				default:
					doPull(cl, rec, w, tl)
				}
			}
		}()
	}
	wg.Wait()
}

// outcomeOf sorts an error: a refusal the server gave before doing anything
// is a failure; anything else (deadline, lost connection, unknown) is
// unknown.
func outcomeOf(err error) history.Outcome {
	switch status.Code(err) {
	case codes.OK:
		return history.OK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound:
		return history.Fail
	}
	return history.Unknown
}

func doAppend(cl *client.Client, rec *recorder, w int, tl, key string) {
	op := history.Op{Process: w, Kind: history.Append, Timeline: tl, Key: key, Payload: "v-" + key}
	doWrite(rec, op, func(ctx context.Context) (uint64, error) {
		resp, err := cl.Append(ctx, tl, []byte(op.Payload), client.AppendOptions{IdempotencyKey: key})
		return resp.GetSeq(), err
	})
}

func doSend(cl *client.Client, rec *recorder, w int, conv, sender string, recipients []string, key string) {
	op := history.Op{Process: w, Kind: history.Send, Timeline: conv, Key: key, Payload: "m-" + key, Sender: sender, Recipients: recipients}
	doWrite(rec, op, func(ctx context.Context) (uint64, error) {
		resp, err := cl.Send(ctx, conv, sender, recipients, []byte(op.Payload), client.AppendOptions{IdempotencyKey: key})
		return resp.GetSeq(), err
	})
}

// doWrite runs one write (retried by the client under one key) and records
// it: ok with its seq, failed, or unknown (no completion time: it may take
// effect at any time after its invocation).
// annotate, if given, adds to the op what the answer said besides the seq.
func doWrite(rec *recorder, op history.Op, write func(context.Context) (uint64, error), annotate ...func(*history.Op)) {
	op.Invoke = rec.now()
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	seq, err := write(ctx)
	cancel()
	for _, a := range annotate {
		a(&op)
	}
	op.Outcome = outcomeOf(err)
	if op.Outcome != history.Unknown {
		op.Complete = rec.now()
	}
	if err != nil {
		op.Error = err.Error()
	} else {
		op.Seq = seq
	}
	rec.add(op)
}

func doHead(cl *client.Client, rec *recorder, w int, tl string) {
	op := history.Op{Process: w, Kind: history.Head, Timeline: tl, Invoke: rec.now()}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	head, err := cl.Head(ctx, tl, client.Linearizable)
	cancel()
	op.Complete = rec.now()
	if err != nil {
		op.Outcome, op.Error = history.Fail, err.Error() // a read that failed observed nothing
	} else {
		op.Outcome, op.HeadSeq = history.OK, head
	}
	rec.add(op)
}

func doPull(cl *client.Client, rec *recorder, w int, tl string) {
	after := rec.knownSeq(tl)
	after -= min(after, 3)
	op := history.Op{Process: w, Kind: history.Pull, Timeline: tl, After: after, Invoke: rec.now()}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	resp, err := cl.Pull(ctx, tl, after, 100, client.Linearizable)
	cancel()
	op.Complete = rec.now()
	if err != nil {
		op.Outcome, op.Error = history.Fail, err.Error()
		rec.add(op)
		return
	}
	op.Outcome, op.HeadSeq = history.OK, resp.GetHeadSeq()
	for _, e := range resp.GetEntries() {
		op.Entries = append(op.Entries, entryOf(e))
	}
	rec.add(op)
}

// entryOf is an entry as the history records it.
func entryOf(e *syncv1.Entry) history.Entry {
	return history.Entry{
		Seq: e.GetSeq(), Key: e.GetIdempotencyKey(), Payload: string(e.GetPayload()),
		Sender: e.GetSender(), Conversation: e.GetConversation(), ConversationSeq: e.GetConversationSeq(),
	}
}
