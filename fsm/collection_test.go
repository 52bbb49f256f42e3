package fsm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func put(key, value string) *fsmpb.RecordOp {
	return &fsmpb.RecordOp{Key: key, Value: []byte(value)}
}

func del(key string) *fsmpb.RecordOp { return &fsmpb.RecordOp{Key: key, Delete: true} }

func writeCmd(collection string, now int64, ops ...*fsmpb.RecordOp) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_RecordWrite{RecordWrite: &fsmpb.RecordWrite{
		Collection: collection, Ops: ops, DedupeWindowMs: day,
	}}}
}

// with edits the RecordWrite of cmd and returns cmd.
func with(cmd *fsmpb.Command, edit func(w *fsmpb.RecordWrite)) *fsmpb.Command {
	edit(cmd.GetRecordWrite())
	return cmd
}

func compactCmd(collection string, cutoff uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_CompactTombstones{CompactTombstones: &fsmpb.CompactTombstones{
		Items: []*fsmpb.CompactItem{{Collection: collection, CutoffVersion: cutoff}},
	}}}
}

// write applies one write and returns its result, failing the test on a
// rejection.
func (h *harness) write(cmd *fsmpb.Command) *WriteResult {
	h.t.Helper()
	res := h.apply(cmd)[0]
	if res.Err != nil {
		h.t.Fatalf("write refused: %v", res.Err)
	}
	return res.Write
}

func (h *harness) syncAll(collection string, since uint64, limit int) (SyncResult, []SyncResult) {
	h.t.Helper()
	var pages []SyncResult
	for {
		res, err := h.f.SyncRecords(collection, since, limit, 0)
		if err != nil {
			h.t.Fatal(err)
		}
		pages = append(pages, res)
		if res.Status != SyncMore {
			return res, pages
		}
		if res.PageVersion <= since {
			h.t.Fatalf("MORE page from %d claims version %d", since, res.PageVersion)
		}
		since = res.PageVersion
	}
}

// clientState is what a device holds of a collection: key -> record.
type clientState map[string]Record

func (c clientState) apply(changes []Record) {
	for _, r := range changes {
		if r.Deleted {
			delete(c, r.Key)
		} else {
			c[r.Key] = r
		}
	}
}

// digest is the collection digest computed from what the client holds.
func (c clientState) digest() string {
	d := make([]byte, 32)
	for k, r := range c {
		d = xorDigest(d, RecordHash(k, r.Version, r.Value))
	}
	return hex.EncodeToString(d)
}

func (c clientState) equal(o clientState) bool {
	return maps.EqualFunc(c, o, func(a, b Record) bool { return a.Version == b.Version && string(a.Value) == string(b.Value) })
}

func TestCollectionVersionsAreGapFreePerCollection(t *testing.T) {
	h := newHarness(t)
	want := map[string]uint64{}
	for i := range 60 {
		c := fmt.Sprint("friends/u", i%3)
		res := h.write(writeCmd(c, int64(i), put(fmt.Sprint("k", i%7), fmt.Sprint(i)), put(fmt.Sprint("x", i%2), "y")))
		want[c]++
		if res.Version != want[c] {
			t.Fatalf("write %d to %s got version %d, want %d", i, c, res.Version, want[c])
		}
	}
	for c, v := range want {
		got, err := h.f.GetRecords(c, nil)
		if err != nil || got.Version != v {
			t.Fatalf("%s at version %d (%v), want %d", c, got.Version, err, v)
		}
	}
}

func TestCollectionConditions(t *testing.T) {
	// The collection holds a@1, b@2 (then deleted at 3), c@4.
	setup := func(t *testing.T) *harness {
		h := newHarness(t)
		h.write(writeCmd("c", 1, put("a", "1")))
		h.write(writeCmd("c", 2, put("b", "2")))
		h.write(writeCmd("c", 3, del("b")))
		h.write(writeCmd("c", 4, put("c", "4")))
		return h
	}
	cond := func(key string, v uint64) *fsmpb.RecordCondition { return &fsmpb.RecordCondition{Key: key, Version: v} }
	tests := []struct {
		name       string
		edit       func(w *fsmpb.RecordWrite)
		ok         bool
		wantCurent []RecordVersion
	}{
		{"record at its version", func(w *fsmpb.RecordWrite) { w.Conditions = []*fsmpb.RecordCondition{cond("a", 1)} }, true, nil},
		{"record at another version", func(w *fsmpb.RecordWrite) { w.Conditions = []*fsmpb.RecordCondition{cond("a", 2)} }, false, []RecordVersion{{"a", 1}}},
		{"absent record must not exist", func(w *fsmpb.RecordWrite) { w.Conditions = []*fsmpb.RecordCondition{cond("zz", 0)} }, true, nil},
		{"tombstone counts as absent", func(w *fsmpb.RecordWrite) { w.Conditions = []*fsmpb.RecordCondition{cond("b", 0)} }, true, nil},
		{"tombstone's version is not live", func(w *fsmpb.RecordWrite) { w.Conditions = []*fsmpb.RecordCondition{cond("b", 3)} }, false, []RecordVersion{{"b", 0}}},
		{"existing record must not exist", func(w *fsmpb.RecordWrite) {
			w.Conditions = []*fsmpb.RecordCondition{cond("zz", 0), cond("c", 0)}
		}, false, []RecordVersion{{"zz", 0}, {"c", 4}}},
		{"collection version holds", func(w *fsmpb.RecordWrite) { w.HasExpectedVersion, w.ExpectedVersion = true, 4 }, true, nil},
		{"collection version moved on", func(w *fsmpb.RecordWrite) { w.HasExpectedVersion, w.ExpectedVersion = true, 3 }, false, nil},
		{"new collection expected empty", func(w *fsmpb.RecordWrite) { w.HasExpectedVersion, w.ExpectedVersion = true, 0 }, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			before := h.digest()
			res := h.apply(with(writeCmd("c", 5, put("new", "v")), tc.edit))[0]
			if tc.ok {
				if res.Err != nil || res.Write.Version != 5 {
					t.Fatalf("got %+v, %v; want version 5", res.Write, res.Err)
				}
				return
			}
			var cf *ConditionFailedError
			if !errors.As(res.Err, &cf) || !errors.Is(res.Err, ErrConditionFailed) {
				t.Fatalf("got %v, want a failed condition", res.Err)
			}
			if cf.Version != 4 || fmt.Sprint(cf.Records) != fmt.Sprint(tc.wantCurent) {
				t.Fatalf("failure reports version %d, records %v; want 4, %v", cf.Version, cf.Records, tc.wantCurent)
			}
			if h.digest() != before {
				t.Fatal("a refused write changed the state")
			}
		})
	}
}

func TestCollectionIdempotentRetryReturnsOriginalVersion(t *testing.T) {
	h := newHarness(t)
	first := h.write(with(writeCmd("p", 10, put("name", "alice")), func(w *fsmpb.RecordWrite) { w.IdempotencyKey = "op-1" }))
	h.write(writeCmd("p", 11, put("city", "x")))
	before := h.digest()
	retry := h.write(with(writeCmd("p", 12, put("name", "alice")), func(w *fsmpb.RecordWrite) { w.IdempotencyKey = "op-1" }))
	if !retry.Deduplicated || retry.Version != first.Version {
		t.Fatalf("retry got %+v, want version %d deduplicated", retry, first.Version)
	}
	if h.digest() != before {
		t.Fatal("a deduplicated retry changed the state")
	}
	// A retry whose conditions no longer hold still gets its answer.
	cond := with(writeCmd("p", 13, put("name", "alice")), func(w *fsmpb.RecordWrite) {
		w.IdempotencyKey, w.HasExpectedVersion, w.ExpectedVersion = "op-1", true, 0
	})
	if got := h.write(cond); !got.Deduplicated || got.Version != first.Version {
		t.Fatalf("conditional retry got %+v", got)
	}
	// Past the window the key is new again.
	late := h.write(with(writeCmd("p", 12+2*day, put("name", "alice")), func(w *fsmpb.RecordWrite) { w.IdempotencyKey = "op-1" }))
	if late.Deduplicated || late.Version != 3 {
		t.Fatalf("write after the window got %+v, want version 3", late)
	}
}

func TestTombstonesAndCompactionLeadToReset(t *testing.T) {
	h := newHarness(t)
	h.write(writeCmd("m", 1, put("a", "1"), put("b", "1"))) // v1
	h.write(writeCmd("m", 2, del("a")))                     // v2
	h.write(writeCmd("m", 3, put("c", "3")))                // v3
	h.write(writeCmd("m", 4, del("c")))                     // v4
	h.write(writeCmd("m", 5, put("d", "5")))                // v5

	res, _ := h.syncAll("m", 1, 100)
	if res.Status != SyncOK || res.PageVersion != 5 || len(res.Changes) != 3 || !res.Changes[0].Deleted || res.Changes[0].Key != "a" {
		t.Fatalf("sync from 1 before compaction: %+v", res)
	}
	h.apply(compactCmd("m", 4))
	for _, tc := range []struct {
		since uint64
		want  SyncStatus
	}{{1, SyncReset}, {3, SyncReset}, {4, SyncOK}, {5, SyncUpToDate}, {6, SyncAhead}} {
		got, err := h.f.SyncRecords("m", tc.since, 100, 0)
		if err != nil || got.Status != tc.want {
			t.Fatalf("sync from %d after compaction to 4: %v (%v), want %v", tc.since, got.Status, err, tc.want)
		}
	}
	// From 0 a client holding nothing gets the live records, no tombstones.
	full, _ := h.syncAll("m", 0, 100)
	st := clientState{}
	st.apply(full.Changes)
	if full.Status != SyncOK || len(st) != 2 || st["b"].Version != 1 || st["d"].Version != 5 || st.digest() != full.Digest {
		t.Fatalf("sync from 0: %+v", full)
	}
	info, _ := h.f.GetRecords("m", nil)
	if info.Horizon != 4 || info.Tombstones != 0 || info.Live != 2 {
		t.Fatalf("after compaction: %+v", info.CollectionState)
	}
	// The horizon never goes back.
	h.apply(compactCmd("m", 2))
	if info, _ := h.f.GetRecords("m", nil); info.Horizon != 4 {
		t.Fatalf("horizon went back to %d", info.Horizon)
	}
}

func TestCompactionStopsAtWholeVersions(t *testing.T) {
	h := newHarness(t)
	// Versions of 250 tombstones each, more than MaxCompactScan in all: one
	// command compacts the versions it can read whole and stops there.
	const per = 250
	n := MaxCompactScan/per + 3
	for v := range n {
		ops := make([]*fsmpb.RecordOp, 0, per)
		for i := range per {
			ops = append(ops, del(fmt.Sprintf("k%d-%d", v, i))) // tombstones of absent keys
		}
		h.write(writeCmd("big", int64(v), ops...))
	}
	h.apply(compactCmd("big", uint64(n)))
	info, _ := h.f.GetRecords("big", nil)
	if want := uint64(MaxCompactScan / per); info.Horizon != want || info.Tombstones != uint64((n-int(want))*per) {
		t.Fatalf("after one compaction: horizon %d, %d tombstones; want %d, %d", info.Horizon, info.Tombstones, want, (n-int(want))*per)
	}
	res, _ := h.syncAll("big", info.Horizon, 1<<20)
	if res.Status != SyncOK || len(res.Changes) != int(info.Tombstones) {
		t.Fatalf("sync from the horizon: %v with %d changes", res.Status, len(res.Changes))
	}
	// The next command finishes the job.
	h.apply(compactCmd("big", uint64(n)))
	if info, _ := h.f.GetRecords("big", nil); info.Horizon != uint64(n) || info.Tombstones != 0 {
		t.Fatalf("after the second compaction: %+v", info.CollectionState)
	}
}

func TestCollectionDigestEqualsRecomputation(t *testing.T) {
	h := newHarness(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		op := put(fmt.Sprint("k", rng.IntN(40)), fmt.Sprint(rng.Int()))
		if rng.IntN(3) == 0 {
			op = del(op.Key)
		}
		h.write(writeCmd("d", int64(i), op))
	}
	st := clientState{}
	after := ""
	var version uint64
	var digest string
	for {
		page, err := h.f.ListRecords("d", after, 7, 0)
		if err != nil {
			t.Fatal(err)
		}
		version, digest = page.Version, page.Digest
		for _, r := range page.Records {
			st[r.Key] = r
		}
		if !page.More {
			break
		}
		after = page.NextAfterKey
	}
	if version != 300 || st.digest() != digest {
		t.Fatalf("digest %s at version %d; recomputed %s", digest, version, st.digest())
	}
	info, _ := h.f.GetRecords("d", nil)
	if info.Live != uint64(len(st)) {
		t.Fatalf("live count %d, records %d", info.Live, len(st))
	}
}

func TestCollectionSnapshotThenRestore(t *testing.T) {
	src := newHarness(t)
	for i := range 40 {
		src.write(with(writeCmd(fmt.Sprint("c", i%4), int64(i), put(fmt.Sprint("k", i%5), fmt.Sprint(i))), func(w *fsmpb.RecordWrite) {
			w.IdempotencyKey = fmt.Sprint("w", i)
		}))
	}
	src.write(writeCmd("c0", 50, del("k0")))
	src.apply(compactCmd("c0", 3))
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := newHarness(t)
	if err := dst.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if src.digest() != dst.digest() {
		t.Fatal("restored state differs")
	}
	// The restored replica goes on identically: versions, dedupe, horizon.
	dst.next = src.next
	for _, h := range []*harness{src, dst} {
		got := h.write(with(writeCmd("c1", 60, put("k1", "again")), func(w *fsmpb.RecordWrite) { w.IdempotencyKey = "w1" }))
		if !got.Deduplicated {
			t.Fatalf("dedupe record lost: %+v", got)
		}
		if res, _ := h.f.SyncRecords("c0", 1, 10, 0); res.Status != SyncReset {
			t.Fatalf("horizon lost: %v", res.Status)
		}
	}
	if src.digest() != dst.digest() {
		t.Fatal("replicas diverged after restore")
	}
}

func TestMalformedRecordWritesChangeNothing(t *testing.T) {
	long := strings.Repeat("k", MaxRecordKeyBytes+1)
	many := make([]*fsmpb.RecordOp, MaxRecordOps+1)
	for i := range many {
		many[i] = put(fmt.Sprint("k", i), "v")
	}
	tests := []struct {
		name string
		cmd  *fsmpb.Command
	}{
		{"empty collection id", writeCmd("", 1, put("a", "b"))},
		{"collection id too long", writeCmd(strings.Repeat("c", MaxCollectionIDBytes+1), 1, put("a", "b"))},
		{"no operations", writeCmd("c", 1)},
		{"too many operations", writeCmd("c", 1, many...)},
		{"empty key", writeCmd("c", 1, put("", "b"))},
		{"key too long", writeCmd("c", 1, put(long, "b"))},
		{"same key twice", writeCmd("c", 1, put("a", "1"), del("a"))},
		{"value too big", writeCmd("c", 1, put("a", strings.Repeat("v", MaxRecordValueBytes+1)))},
		{"delete with a value", writeCmd("c", 1, &fsmpb.RecordOp{Key: "a", Delete: true, Value: []byte("x")})},
		{"bad metadata", writeCmd("c", 1, &fsmpb.RecordOp{Key: "a", Metadata: map[string]string{"": "x"}})},
		{"condition on an empty key", with(writeCmd("c", 1, put("a", "b")), func(w *fsmpb.RecordWrite) {
			w.Conditions = []*fsmpb.RecordCondition{{Key: ""}}
		})},
		{"two conditions on one key", with(writeCmd("c", 1, put("a", "b")), func(w *fsmpb.RecordWrite) {
			w.Conditions = []*fsmpb.RecordCondition{{Key: "x"}, {Key: "x", Version: 2}}
		})},
		{"expected version without its flag", with(writeCmd("c", 1, put("a", "b")), func(w *fsmpb.RecordWrite) { w.ExpectedVersion = 3 })},
		{"idempotency key without a window", with(writeCmd("c", 1, put("a", "b")), func(w *fsmpb.RecordWrite) {
			w.IdempotencyKey, w.DedupeWindowMs = "k", 0
		})},
		{"compaction of nothing", &fsmpb.Command{Op: &fsmpb.Command_CompactTombstones{CompactTombstones: &fsmpb.CompactTombstones{}}}},
		{"compaction of an empty id", compactCmd("", 3)},
	}
	h := newHarness(t)
	h.write(writeCmd("c", 1, put("a", "1")))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.digest()
			res := h.apply(tc.cmd)[0]
			if !errors.Is(res.Err, ErrInvalidArgument) {
				t.Fatalf("got %v, want invalid argument", res.Err)
			}
			if h.digest() != before {
				t.Fatal("a refused command changed the state")
			}
		})
	}
}

func TestSyncPagesNeverSplitAWrite(t *testing.T) {
	h := newHarness(t)
	h.write(writeCmd("s", 1, put("a", "1"), put("b", "1"), put("c", "1"))) // v1: 3 records
	h.write(writeCmd("s", 2, put("d", "2")))                               // v2
	h.write(writeCmd("s", 3, put("e", "3"), put("f", "3")))                // v3
	_, pages := h.syncAll("s", 0, 1)
	var got []string
	for _, p := range pages {
		var keys []string
		for _, c := range p.Changes {
			keys = append(keys, fmt.Sprint(c.Key, "@", c.Version))
			if c.Version > p.PageVersion {
				t.Fatalf("page claiming version %d holds %s@%d", p.PageVersion, c.Key, c.Version)
			}
		}
		got = append(got, fmt.Sprintf("%v:%v", p.Status, keys))
	}
	want := "[MORE:[a@1 b@1 c@1] MORE:[d@2] OK:[e@3 f@3]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("pages %v, want %s", got, want)
	}
}

// TestPropertySyncFromAnyVersionConverges: for random write histories,
// syncing from every version v in 0..head (in small pages) onto the state a
// client held at v reaches exactly the final state and its digest; so does
// a paged full read, interleaved with more writes, followed by a sync from
// the version at which the read began.
func TestPropertySyncFromAnyVersionConverges(t *testing.T) {
	for seed := range uint64(25) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			h := newHarness(t)
			rng := rand.New(rand.NewPCG(seed, 99))
			var states []clientState // states[v]: the collection after version v
			states = append(states, clientState{})
			randomWrite := func(now int64) {
				n := 1 + rng.IntN(4)
				used := map[string]bool{}
				var ops []*fsmpb.RecordOp
				for range n {
					k := fmt.Sprint("k", rng.IntN(30))
					if used[k] {
						continue
					}
					used[k] = true
					if rng.IntN(4) == 0 {
						ops = append(ops, del(k))
					} else {
						ops = append(ops, put(k, fmt.Sprint(rng.Int64())))
					}
				}
				res := h.write(writeCmd("p", now, ops...))
				if res.Version != uint64(len(states)) {
					t.Fatalf("write got version %d, want %d", res.Version, len(states))
				}
				next := maps.Clone(states[len(states)-1])
				for _, op := range ops {
					if op.Delete {
						delete(next, op.Key)
					} else {
						next[op.Key] = Record{Key: op.Key, Version: res.Version, Value: op.Value}
					}
				}
				states = append(states, next)
			}
			for i := range 80 + rng.IntN(80) {
				randomWrite(int64(i))
			}
			if rng.IntN(2) == 0 { // compact some tombstones
				h.apply(compactCmd("p", uint64(rng.IntN(len(states)))))
			}
			final := states[len(states)-1]
			info, _ := h.f.GetRecords("p", nil)
			if final.digest() != info.Digest {
				t.Fatal("server digest differs from the model's")
			}
			for v := range uint64(len(states)) {
				res, _ := h.syncAll("p", v, 1+rng.IntN(8))
				if res.Status == SyncReset {
					if v >= info.Horizon {
						t.Fatalf("RESET from %d with horizon %d", v, info.Horizon)
					}
					continue
				}
				st := maps.Clone(states[v])
				_, pages := h.syncAll("p", v, 1+rng.IntN(8))
				for _, p := range pages {
					st.apply(p.Changes)
				}
				if !st.equal(final) || st.digest() != pages[len(pages)-1].Digest {
					t.Fatalf("sync from %d did not converge", v)
				}
			}
			// A full read interleaved with writes, then a sync from where it began.
			st := clientState{}
			after, began := "", uint64(0)
			for first := true; ; first = false {
				page, err := h.f.ListRecords("p", after, 1+rng.IntN(6), 0)
				if err != nil {
					t.Fatal(err)
				}
				if first {
					began = page.Version
				}
				for _, r := range page.Records {
					st[r.Key] = r
				}
				randomWrite(int64(1000 + len(states)))
				if !page.More {
					break
				}
				after = page.NextAfterKey
			}
			_, pages := h.syncAll("p", began, 1+rng.IntN(8))
			for _, p := range pages {
				st.apply(p.Changes)
			}
			if final := states[len(states)-1]; !st.equal(final) || st.digest() != final.digest() {
				t.Fatal("full read then sync did not converge")
			}
		})
	}
}

func TestCompactionCandidatesByAgeAndCount(t *testing.T) {
	h := newHarness(t)
	// "old": tombstones at versions 2 (t=1000) and 4 (t=5000); "many": 5 tombstones.
	h.write(writeCmd("old", 1000, put("a", "1")))
	h.write(writeCmd("old", 1000, del("a")))
	h.write(writeCmd("old", 5000, put("b", "1")))
	h.write(writeCmd("old", 5000, del("b")))
	for i := range 5 {
		h.write(writeCmd("many", 9000, del(fmt.Sprint("k", i))))
	}
	h.write(writeCmd("none", 1, put("x", "1")))
	cutoffs := func(p CompactionPolicy, now int64) map[string]uint64 {
		items, next, err := h.f.CompactionCandidates(p, now, "", 100, 1000)
		if err != nil || next != "" {
			t.Fatalf("candidates: %v, next %q", err, next)
		}
		out := map[string]uint64{}
		for _, it := range items {
			out[it.GetCollection()] = it.GetCutoffVersion()
		}
		return out
	}
	tests := []struct {
		name string
		p    CompactionPolicy
		now  int64
		want string
	}{
		{"no policy", CompactionPolicy{}, 10000, "map[]"},
		{"by age: older than 2 s at t=6 s", CompactionPolicy{MaxAgeMs: 2000}, 6000, "map[old:2]"},
		{"by age: everything", CompactionPolicy{MaxAgeMs: 1}, 100000, "map[many:5 old:4]"},
		{"by count: keep 2", CompactionPolicy{Keep: 2}, 0, "map[many:3]"},
		{"by count: keep 1", CompactionPolicy{Keep: 1}, 0, "map[many:4 old:2]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(cutoffs(tc.p, tc.now)); got != tc.want {
				t.Fatalf("cutoffs %s, want %s", got, tc.want)
			}
		})
	}
	// Resuming: one collection per call walks them all.
	var seen []string
	resume := ""
	for range 10 {
		items, next, err := h.f.CompactionCandidates(CompactionPolicy{Keep: 1}, 0, resume, 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			seen = append(seen, it.GetCollection())
		}
		if resume = next; resume == "" {
			break
		}
	}
	if len(seen) != 2 {
		t.Fatalf("a resumed pass found %v, want both collections", seen)
	}
}

func TestDigestWithIndexPairsTheDigestWithItsState(t *testing.T) {
	h := newHarness(t)
	for i := range 5 {
		h.write(writeCmd("c", int64(i), put("k", fmt.Sprint(i))))
	}
	d, applied, err := h.f.DigestWithIndex()
	if err != nil || d != h.digest() || applied != h.f.AppliedIndex() || applied != 5 {
		t.Fatalf("DigestWithIndex %s at %d (%v); Digest %s, applied %d", d, applied, err, h.digest(), h.f.AppliedIndex())
	}
}
