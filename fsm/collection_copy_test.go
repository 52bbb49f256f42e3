package fsm

import (
	"errors"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func copyCmd(items ...*fsmpb.CopyItem) *fsmpb.Command {
	return &fsmpb.Command{NowMs: 5, Op: &fsmpb.Command_CopyRecords{CopyRecords: &fsmpb.CopyRecords{Items: items}}}
}

func TestWriteWithCopiesQueuesAJobInItsTransaction(t *testing.T) {
	h := newHarness(t)
	w := with(writeCmd("profile/alice", 1, put("name", "Alice")), func(w *fsmpb.RecordWrite) {
		w.Copies = []*fsmpb.RecordCopy{{Key: "name", TargetKey: "alice", Targets: []string{"members/g1", "friends/bob"}}}
		w.IdempotencyKey = "p1"
	})
	h.write(w)
	h.write(w) // a retry queues nothing more
	jobs, err := h.f.CopyJobs(10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v, %v; want one", jobs, err)
	}
	j := jobs[0]
	if j.GetSource() != "profile/alice" || j.GetVersion() != 1 || len(j.GetItems()) != 1 || string(j.GetItems()[0].GetValue()) != "Alice" || len(j.GetItems()[0].GetTargets()) != 2 {
		t.Fatalf("job %v", j)
	}
	h.apply(&fsmpb.Command{Op: &fsmpb.Command_CopyDone{CopyDone: &fsmpb.CopyDone{Source: "profile/alice", Version: 1}}})
	if jobs, _ := h.f.CopyJobs(10); len(jobs) != 0 {
		t.Fatalf("job still there after CopyDone: %v", jobs)
	}
}

func TestCopyRecordsAppliesEachSourceVersionOnce(t *testing.T) {
	h := newHarness(t)
	item := func(v uint64, value string) *fsmpb.CopyItem {
		return &fsmpb.CopyItem{Collection: "members/g1", Key: "alice", Value: []byte(value), Source: "profile/alice", SourceVersion: v}
	}
	steps := []struct {
		item                  *fsmpb.CopyItem
		written, skipped      int
		wantVersion, wantMark uint64
		wantValue             string
	}{
		{item(2, "v2"), 1, 0, 1, 2, "v2"},
		{item(2, "v2"), 0, 1, 1, 2, "v2"}, // made again after a failover: nothing changes
		{item(1, "v1"), 0, 1, 1, 2, "v2"}, // an older version arriving late: skipped
		{item(5, "v5"), 1, 0, 2, 5, "v5"},
	}
	for i, s := range steps {
		res := h.apply(copyCmd(s.item))[0]
		if res.Err != nil || res.Copy.Written != s.written || res.Copy.Skipped != s.skipped {
			t.Fatalf("step %d: %+v %v", i, res.Copy, res.Err)
		}
		got, _ := h.f.GetRecords("members/g1", []string{"alice"})
		mark, _ := h.f.CopyMark("members/g1", "profile/alice", "alice")
		if got.Version != s.wantVersion || mark != s.wantMark || len(got.Records) != 1 || string(got.Records[0].Value) != s.wantValue {
			t.Fatalf("step %d: version %d mark %d records %v", i, got.Version, mark, got.Records)
		}
	}
	// A deletion is copied as a tombstone.
	h.apply(copyCmd(&fsmpb.CopyItem{Collection: "members/g1", Key: "alice", Deleted: true, Source: "profile/alice", SourceVersion: 6}))
	if got, _ := h.f.GetRecords("members/g1", []string{"alice"}); len(got.Records) != 0 || got.Version != 3 {
		t.Fatalf("after a copied delete: %+v", got)
	}
}

func TestMalformedCopiesChangeNothing(t *testing.T) {
	tests := []struct {
		name string
		cmd  *fsmpb.Command
	}{
		{"copy of a key the write does not set", with(writeCmd("p", 1, put("a", "1")), func(w *fsmpb.RecordWrite) {
			w.Copies = []*fsmpb.RecordCopy{{Key: "b", TargetKey: "x", Targets: []string{"t"}}}
		})},
		{"copy into the source", with(writeCmd("p", 1, put("a", "1")), func(w *fsmpb.RecordWrite) {
			w.Copies = []*fsmpb.RecordCopy{{Key: "a", TargetKey: "x", Targets: []string{"p"}}}
		})},
		{"copy with no targets", with(writeCmd("p", 1, put("a", "1")), func(w *fsmpb.RecordWrite) {
			w.Copies = []*fsmpb.RecordCopy{{Key: "a", TargetKey: "x"}}
		})},
		{"copy with an empty target key", with(writeCmd("p", 1, put("a", "1")), func(w *fsmpb.RecordWrite) {
			w.Copies = []*fsmpb.RecordCopy{{Key: "a", Targets: []string{"t"}}}
		})},
		{"copy naming a target twice", with(writeCmd("p", 1, put("a", "1")), func(w *fsmpb.RecordWrite) {
			w.Copies = []*fsmpb.RecordCopy{{Key: "a", TargetKey: "x", Targets: []string{"t", "t"}}}
		})},
		{"empty CopyRecords", copyCmd()},
		{"copy item without a source version", copyCmd(&fsmpb.CopyItem{Collection: "t", Key: "k", Source: "p"})},
		{"copy item deleting with a value", copyCmd(&fsmpb.CopyItem{Collection: "t", Key: "k", Source: "p", SourceVersion: 1, Deleted: true, Value: []byte("x")})},
		{"CopyDone of an empty source", &fsmpb.Command{Op: &fsmpb.Command_CopyDone{CopyDone: &fsmpb.CopyDone{}}}},
	}
	h := newHarness(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.digest()
			if res := h.apply(tc.cmd)[0]; !errors.Is(res.Err, ErrInvalidArgument) {
				t.Fatalf("got %v, want invalid argument", res.Err)
			}
			if h.digest() != before {
				t.Fatal("a refused command changed the state")
			}
		})
	}
}
