package moveinfo

import (
	"testing"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

func TestRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []*syncv1.SlotRange
		want string
	}{
		{nil, ""},
		{[]*syncv1.SlotRange{{Start: 7, End: 8}}, "7"},
		{[]*syncv1.SlotRange{{Start: 0, End: 1024}, {Start: 2000, End: 2001}}, "0-1023,2000"},
	} {
		if got := Ranges(tc.in); got != tc.want {
			t.Errorf("Ranges(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPhase(t *testing.T) {
	for _, tc := range []struct {
		m    *syncv1.MoveInfo
		want string
	}{
		{&syncv1.MoveInfo{Phase: "fenced"}, "fenced"},
		{&syncv1.MoveInfo{Phase: "fenced", AbortRequested: true}, "fenced (aborting)"},
		{&syncv1.MoveInfo{Phase: "aborted", AbortRequested: true}, "aborted"},
	} {
		if got := Phase(tc.m); got != tc.want {
			t.Errorf("Phase(%v) = %q, want %q", tc.m, got, tc.want)
		}
	}
}
