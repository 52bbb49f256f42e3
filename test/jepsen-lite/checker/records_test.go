package checker

import (
	"slices"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// recordsRun: collection "c" gets a@1, then b@2 and a deleted at 2, then an
// unknown write that applied at 3 (b again); a device syncs 0->1, 1->3 in
// two pages, and the final copies (two replicas) hold b@3.
func recordsRun() ([]history.Op, history.Final) {
	ops := []history.Op{
		{Process: 0, Kind: history.RecordWrite, Timeline: "c", Key: "w1", Puts: map[string]string{"a": "w1/a"}, Outcome: history.OK, Seq: 1},
		{Process: 0, Kind: history.RecordWrite, Timeline: "c", Key: "w2", Puts: map[string]string{"b": "w2/b"}, Deletes: []string{"a"}, Outcome: history.OK, Seq: 2},
		{Process: 1, Kind: history.RecordWrite, Timeline: "c", Key: "w3", Puts: map[string]string{"b": "w3/b"}, Outcome: history.Unknown},
		{Process: 2, Kind: history.RecordSync, Timeline: "c", After: 0, Outcome: history.OK, Status: "RECORD_SYNC_STATUS_OK", Seq: 1,
			Records: []history.Record{{Key: "a", Version: 1, Value: "w1/a"}}},
		{Process: 2, Kind: history.RecordSync, Timeline: "c", After: 1, Outcome: history.OK, Status: "RECORD_SYNC_STATUS_MORE", Seq: 2,
			Records: []history.Record{{Key: "a", Version: 2, Deleted: true}}},
		{Process: 2, Kind: history.RecordSync, Timeline: "c", After: 2, Outcome: history.OK, Status: "RECORD_SYNC_STATUS_OK", Seq: 3,
			Records: []history.Record{{Key: "b", Version: 3, Value: "w3/b"}}},
	}
	final3 := map[string]history.Record{"b": {Key: "b", Version: 3, Value: "w3/b"}}
	ops[3].Digest = digestOf(map[string]history.Record{"a": {Key: "a", Version: 1, Value: "w1/a"}})
	ops[5].Digest = digestOf(final3)
	c := history.Collection{Version: 3, Digest: digestOf(final3), Records: []history.Record{final3["b"]}}
	return ops, history.Final{Collections: map[string]map[string]history.Collection{"n1": {"c": c}, "n2": {"c": c}}}
}

func TestRecordsCheckers(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(ops []history.Op, f *history.Final)
		checker string // the one that must fail ("" none); "collections+" also lets devices fail
		want    string
	}{
		{"valid", func([]history.Op, *history.Final) {}, "", ""},
		{"lost acknowledged write", func(ops []history.Op, f *history.Final) {
			ops[2].Outcome = history.Fail // then b@3 has no writer and version 3 is a gap
		}, "collections", "gap"},
		{"version given twice", func(ops []history.Op, f *history.Final) { ops[1].Seq = 1 }, "collections", "acknowledged to writes"},
		{"delete lost", func(ops []history.Op, f *history.Final) {
			c := f.Collections["n1"]["c"]
			c.Records = append([]history.Record{{Key: "a", Version: 1, Value: "w1/a"}}, c.Records...)
			c.Digest = digestOf(map[string]history.Record{"a": c.Records[0], "b": c.Records[1]})
			f.Collections["n1"]["c"] = c
		}, "collections+", "survives"},
		{"replicas differ", func(ops []history.Op, f *history.Final) {
			f.Collections["n2"] = map[string]history.Collection{"c": {Version: 3, Digest: strings.Repeat("0", 64)}}
		}, "collections", "differs"},
		{"device page misses a change", func(ops []history.Op, f *history.Final) { ops[4].Records = nil }, "devices", "hashing"},
		{"device skipped versions", func(ops []history.Op, f *history.Final) { ops[5].After = 1 }, "devices", "synced from"},
		{"ahead", func(ops []history.Op, f *history.Final) { ops[5].Status = "RECORD_SYNC_STATUS_AHEAD" }, "devices", "ahead"},
		{"device holds what no replica holds", func(ops []history.Op, f *history.Final) {
			other := map[string]history.Record{"b": {Key: "b", Version: 3, Value: "other"}}
			c := history.Collection{Version: 3, Digest: digestOf(other), Records: []history.Record{other["b"]}}
			f.Collections = map[string]map[string]history.Collection{"n1": {"c": c}, "n2": {"c": c}}
		}, "devices", "differs from the final records"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ops, f := recordsRun()
			tc.edit(ops, &f)
			for _, v := range []Verdict{Collections(ops, f), Devices(ops, f)} {
				wantValid := v.Checker != strings.TrimSuffix(tc.checker, "+")
				if tc.checker == "collections+" && v.Checker == "devices" {
					continue // the device ends at the final version: it sees the damage too
				}
				if v.Valid != wantValid {
					t.Fatalf("%s valid=%v, want %v: %v", v.Checker, v.Valid, wantValid, v.Problems)
				}
				if !wantValid && !slices.ContainsFunc(v.Problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
					t.Fatalf("%s problems %v, want one mentioning %q", v.Checker, v.Problems, tc.want)
				}
			}
		})
	}
}
