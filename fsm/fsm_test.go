package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/storage"
)

const day = 24 * 60 * 60 * 1000

// harness applies commands with increasing log indexes.
type harness struct {
	t    *testing.T
	f    *FSM
	eng  *storage.Engine
	dir  string
	next uint64
	// applied is every command applied, in order, for a replay in other
	// batches (replayInBatches).
	applied []*fsmpb.Command
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	eng := openEngine(t, dir)
	return &harness{t: t, f: openFSM(t, eng), eng: eng, dir: dir, next: 1}
}

// reopen closes the state machine and its engine and opens them again.
func (h *harness) reopen() {
	h.t.Helper()
	h.f.Close()
	if err := h.eng.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.eng = openEngine(h.t, h.dir)
	h.f = openFSM(h.t, h.eng)
}

func appendCmd(timeline, payload, key string, now int64) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_Append{Append: &fsmpb.Append{
		Timeline: timeline, Payload: []byte(payload), IdempotencyKey: key, DedupeWindowMs: day,
	}}}
}

func (h *harness) log(cmd *fsmpb.Command) *raft.Log {
	h.t.Helper()
	data, err := EncodeCommand(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	l := &raft.Log{Index: h.next, Term: 1, Type: raft.LogCommand, Data: data}
	h.next++
	return l
}

func (h *harness) apply(cmds ...*fsmpb.Command) []*Result {
	h.t.Helper()
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = h.log(c)
	}
	h.applied = append(h.applied, cmds...)
	return results(h.f.ApplyBatch(logs))
}

// replayInBatches applies the commands h applied to a fresh state machine,
// n per batch (one transaction each), and returns its digest: batching
// must not change what the commands do (a replica replaying its log
// batches them otherwise than it did live).
func (h *harness) replayInBatches(n int) string {
	h.t.Helper()
	r := newHarness(h.t)
	for cmds := range slices.Chunk(h.applied, n) {
		r.apply(cmds...)
	}
	return r.digest()
}

func results(out []interface{}) []*Result {
	rs := make([]*Result, len(out))
	for i, o := range out {
		rs[i], _ = o.(*Result)
	}
	return rs
}

func (h *harness) digest() string {
	h.t.Helper()
	d, err := h.f.Digest()
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func (h *harness) pullAll(timeline string) []Entry {
	h.t.Helper()
	res, err := h.f.Pull(timeline, 0, 1000, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	return res.Entries
}

func TestApplyAssignsGapFreeSeqs(t *testing.T) {
	h := newHarness(t)
	want := map[string]uint64{}
	for i := range 30 {
		tl := fmt.Sprintf("t%d", i%3)
		want[tl]++
		res := h.apply(appendCmd(tl, fmt.Sprint(i), "", int64(1000+i)))[0]
		if res.Err != nil || res.Append.Seq != want[tl] || res.Append.TsMs != int64(1000+i) {
			t.Fatalf("append %d: got %+v err %v, want seq %d", i, res.Append, res.Err, want[tl])
		}
	}
	for tl, head := range want {
		entries := h.pullAll(tl)
		if uint64(len(entries)) != head {
			t.Fatalf("%s: %d entries, want %d", tl, len(entries), head)
		}
		for i, e := range entries {
			if e.Seq != uint64(i+1) {
				t.Fatalf("%s: entry %d has seq %d", tl, i, e.Seq)
			}
		}
	}
	if got := h.f.AppliedIndex(); got != 30 {
		t.Fatalf("applied index %d, want 30", got)
	}
}

func TestApplyBatchIsOneTransactionWithPerEntryResults(t *testing.T) {
	h := newHarness(t)
	rs := h.apply(
		appendCmd("a", "1", "k1", 10),
		appendCmd("a", "2", "k2", 11),
		appendCmd("", "bad", "", 12), // rejected, the rest of the batch goes on
		appendCmd("a", "1-again", "k1", 13),
		appendCmd("b", "1", "", 14),
	)
	want := []struct {
		seq   uint64
		dedup bool
		err   error
	}{{1, false, nil}, {2, false, nil}, {0, false, ErrInvalidArgument}, {1, true, nil}, {1, false, nil}}
	for i, w := range want {
		r := rs[i]
		if w.err != nil {
			if !errors.Is(r.Err, w.err) {
				t.Fatalf("entry %d: err %v, want %v", i, r.Err, w.err)
			}
			continue
		}
		if r.Err != nil || r.Append.Seq != w.seq || r.Append.Deduplicated != w.dedup {
			t.Fatalf("entry %d: got %+v err %v, want seq %d dedup %v", i, r.Append, r.Err, w.seq, w.dedup)
		}
	}
	if got := h.f.AppliedIndex(); got != 5 {
		t.Fatalf("applied index %d, want 5", got)
	}
}

func TestDedupeReturnsOriginalSeqWithinWindow(t *testing.T) {
	h := newHarness(t)
	first := h.apply(appendCmd("a", "x", "key", 1000))[0].Append
	h.apply(appendCmd("a", "y", "", 1001))
	again := h.apply(appendCmd("a", "x", "key", 1000+day))[0].Append
	if !again.Deduplicated || again.Seq != first.Seq || again.TsMs != first.TsMs {
		t.Fatalf("retry inside the window: got %+v, want the original %+v", again, first)
	}
	if n := len(h.pullAll("a")); n != 2 {
		t.Fatalf("%d entries after a deduplicated retry, want 2", n)
	}
	// The same key on another timeline is another append.
	if r := h.apply(appendCmd("b", "x", "key", 1002))[0].Append; r.Deduplicated || r.Seq != 1 {
		t.Fatalf("same key on another timeline: got %+v", r)
	}
	// Past the window the key is forgotten.
	late := h.apply(appendCmd("a", "x", "key", 1001+day+1))[0].Append
	if late.Deduplicated || late.Seq != 3 {
		t.Fatalf("retry past the window: got %+v, want a new seq 3", late)
	}
}

func TestDedupeRecordsAreCollectedAfterTheWindow(t *testing.T) {
	h := newHarness(t)
	for i := range 40 {
		h.apply(appendCmd("a", "x", fmt.Sprint("k", i), int64(i)))
	}
	countDedupe := func() (n int) {
		h.f.view(func(root *bolt.Bucket) error {
			c := root.Bucket(bucketTimelines).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if id, ok := timelineIDOf(k); ok && len(k) > 4+len(id) && k[4+len(id)] == kindDedupe {
					n++
				}
			}
			return nil
		})
		return n
	}
	if n := countDedupe(); n != 40 {
		t.Fatalf("%d dedupe records, want 40", n)
	}
	for range 3 { // each append collects up to dedupeGCPerAppend
		h.apply(appendCmd("b", "x", "", 10*day))
	}
	if n := countDedupe(); n != 0 {
		t.Fatalf("%d dedupe records left after expiry, want 0", n)
	}
}

func TestMalformedCommandsChangeNothing(t *testing.T) {
	big := strings.Repeat("x", MaxTimelineIDBytes+1)
	meta := map[string]string{}
	for i := range MaxMetadataPairs + 1 {
		meta[fmt.Sprint(i)] = "v"
	}
	cases := []struct {
		name string
		data []byte
		cmd  *fsmpb.Command
		want error
	}{
		{name: "garbage bytes", data: []byte{0xff, 0xff, 0xff}, want: ErrMalformedCommand},
		{name: "no format", data: []byte{}, want: ErrMalformedCommand},
		{name: "no operation", cmd: &fsmpb.Command{}, want: ErrMalformedCommand},
		{name: "empty timeline", cmd: appendCmd("", "x", "", 1), want: ErrInvalidArgument},
		{name: "long timeline", cmd: appendCmd(big, "x", "", 1), want: ErrInvalidArgument},
		{name: "payload over the hard limit", cmd: appendCmd("a", strings.Repeat("p", MaxPayloadBytes+1), "", 1), want: ErrInvalidArgument},
		{name: "long idempotency key", cmd: appendCmd("a", "x", strings.Repeat("k", MaxIdempotencyKeyBytes+1), 1), want: ErrInvalidArgument},
		{name: "too much metadata", cmd: &fsmpb.Command{Op: &fsmpb.Command_Append{Append: &fsmpb.Append{Timeline: "a", Metadata: meta}}}, want: ErrInvalidArgument},
		{name: "key without window", cmd: &fsmpb.Command{Op: &fsmpb.Command_Append{Append: &fsmpb.Append{Timeline: "a", IdempotencyKey: "k"}}}, want: ErrInvalidArgument},
		{name: "node without id", cmd: &fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{RaftAddr: "x"}}}, want: ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.apply(appendCmd("a", "before", "", 1))
			before := h.digest()
			var l *raft.Log
			if tc.cmd != nil {
				l = h.log(tc.cmd)
			} else {
				l = &raft.Log{Index: h.next, Term: 1, Type: raft.LogCommand, Data: tc.data}
			}
			r, _ := h.f.Apply(l).(*Result)
			if r == nil || !errors.Is(r.Err, tc.want) {
				t.Fatalf("got %+v, want error %v", r, tc.want)
			}
			if after := h.digest(); after != before {
				t.Fatal("a rejected command changed the state")
			}
			if h.f.AppliedIndex() != l.Index {
				t.Fatalf("applied index %d, want %d (a rejected entry is still consumed)", h.f.AppliedIndex(), l.Index)
			}
		})
	}
}

func TestUnknownCommands(t *testing.T) {
	h := newHarness(t)
	// A newer format marked safe to ignore is skipped.
	ignorable := &fsmpb.Command{Format: CommandFormat + 1, IgnoreIfUnknown: true}
	data, _ := protoMarshal(ignorable)
	before := h.digest()
	if r := h.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}).(*Result); r.Err != nil || r.Op != "ignored" {
		t.Fatalf("ignorable command: got %+v", r)
	}
	if h.digest() != before {
		t.Fatal("an ignored command changed the state")
	}
	// Anything else stops the replica rather than letting it diverge.
	unknown := &fsmpb.Command{Format: CommandFormat + 1}
	data, _ = protoMarshal(unknown)
	defer func() {
		if recover() == nil {
			t.Fatal("an unknown command did not stop the replica")
		}
		if h.f.AppliedIndex() != 1 {
			t.Fatalf("applied index moved past the unknown command")
		}
	}()
	h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
}

func TestReplayAfterRestartAppliesNothingTwice(t *testing.T) {
	h := newHarness(t)
	var logs []*raft.Log
	for i := range 10 {
		logs = append(logs, h.log(appendCmd("a", fmt.Sprint(i), "", int64(i))))
	}
	h.f.ApplyBatch(logs[:6])
	h.reopen()
	f := h.f
	if f.AppliedIndex() != 6 {
		t.Fatalf("applied index after reopen %d, want 6", f.AppliedIndex())
	}
	// Raft replays from its last snapshot: entries 3..10.
	out := results(f.ApplyBatch(logs[2:]))
	for i, r := range out[:4] {
		if r != nil {
			t.Fatalf("replayed entry %d produced %+v", i+3, r)
		}
	}
	entries := h.pullAll("a")
	if len(entries) != 10 {
		t.Fatalf("%d entries after replay, want 10", len(entries))
	}
	for i, e := range entries {
		if e.Seq != uint64(i+1) || string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("entry %d: seq %d payload %q", i, e.Seq, e.Payload)
		}
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestSnapshotThenRestoreEqualsOriginal(t *testing.T) {
	src := newHarness(t)
	for i := range 50 {
		src.apply(appendCmd(fmt.Sprint("t", i%5), fmt.Sprint(i), fmt.Sprint("k", i), int64(i)))
	}
	src.apply(&fsmpb.Command{Op: &fsmpb.Command_RegisterNode{RegisterNode: &fsmpb.RegisterNode{NodeId: "n1", RaftAddr: "127.0.0.1:7001", GrpcAddr: "127.0.0.1:7000"}}})
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot began are not in it.
	src.apply(appendCmd("t0", "later", "", 99))
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := newHarness(t)
	dst.apply(appendCmd("other", "to be replaced", "", 1))
	if err := dst.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if dst.f.AppliedIndex() != 51 {
		t.Fatalf("restored applied index %d, want 51", dst.f.AppliedIndex())
	}
	if len(dst.pullAll("other")) != 0 {
		t.Fatal("restore merged instead of replacing")
	}
	// Same state as the source had at index 51: apply the later write to both.
	dst.next = 52
	dst.apply(appendCmd("t0", "later", "", 99))
	if src.digest() != dst.digest() {
		t.Fatal("restored state differs from the original")
	}
	nodes, err := dst.f.Nodes()
	if err != nil || len(nodes) != 1 || nodes[0].GRPCAddr != "127.0.0.1:7000" {
		t.Fatalf("nodes after restore: %+v %v", nodes, err)
	}
}

func TestRestoreRejectsGarbageAndKeepsState(t *testing.T) {
	h := newHarness(t)
	h.apply(appendCmd("a", "x", "", 1))
	before := h.digest()
	if err := h.f.Restore(io.NopCloser(strings.NewReader("not a database"))); err == nil {
		t.Fatal("restore accepted garbage")
	}
	if h.digest() != before {
		t.Fatal("a failed restore changed the state")
	}
}

// Invalid UTF-8 cannot even be encoded into a command (proto3 strings), so the
// node validates before proposing; these are the checks it runs.
func TestValidateAppendRejectsInvalidUTF8(t *testing.T) {
	cases := []struct {
		name string
		a    *fsmpb.Append
	}{
		{"timeline", &fsmpb.Append{Timeline: "a\xff"}},
		{"idempotency key", &fsmpb.Append{Timeline: "a", IdempotencyKey: "k\xff", DedupeWindowMs: 1}},
		{"metadata key", &fsmpb.Append{Timeline: "a", Metadata: map[string]string{"\xff": "v"}}},
		{"metadata value", &fsmpb.Append{Timeline: "a", Metadata: map[string]string{"k": "\xff"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateAppend(tc.a)
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "UTF-8") {
				t.Fatalf("got %v, want an invalid-argument error naming UTF-8", err)
			}
		})
	}
}

func TestPullStatuses(t *testing.T) {
	h := newHarness(t)
	for i := range 10 {
		h.apply(appendCmd("a", strings.Repeat("p", 10), "", int64(i)))
	}
	// Simulate retention having dropped seqs 1..3.
	err := h.f.update(func(root *bolt.Bucket) error {
		for seq := uint64(1); seq <= 3; seq++ {
			if err := root.Bucket(bucketTimelines).Delete(entryKey(timelineKey("a"), seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name            string
		timeline        string
		after           uint64
		limit, maxBytes int
		status          PullStatus
		first, last     uint64 // seqs of the page; 0 when empty
		oldest          uint64
	}{
		{"empty timeline", "none", 0, 10, 0, PullUpToDate, 0, 0, 0},
		{"ahead of an empty timeline", "none", 3, 10, 0, PullAhead, 0, 0, 0},
		{"up to date", "a", 10, 10, 0, PullUpToDate, 0, 0, 4},
		{"ahead", "a", 11, 10, 0, PullAhead, 0, 0, 4},
		{"reset below oldest", "a", 1, 10, 0, PullReset, 0, 0, 4},
		{"from just below oldest", "a", 3, 10, 0, PullOK, 4, 10, 4},
		{"a page with more", "a", 3, 4, 0, PullMore, 4, 7, 4},
		{"the last page", "a", 7, 4, 0, PullOK, 8, 10, 4},
		{"a byte-bounded page", "a", 5, 100, 25, PullMore, 6, 7, 4},
		{"one entry even past the byte bound", "a", 5, 100, 1, PullMore, 6, 6, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.f.Pull(tc.timeline, tc.after, tc.limit, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			var first, last uint64
			if n := len(res.Entries); n > 0 {
				first, last = res.Entries[0].Seq, res.Entries[n-1].Seq
				if int(last-first+1) != n {
					t.Fatalf("page is not contiguous: %d entries from %d to %d", n, first, last)
				}
			}
			if res.Status != tc.status || first != tc.first || last != tc.last || res.Oldest != tc.oldest {
				t.Fatalf("got %s [%d..%d] oldest %d, want %s [%d..%d] oldest %d",
					res.Status, first, last, res.Oldest, tc.status, tc.first, tc.last, tc.oldest)
			}
		})
	}
}
