package main

import (
	"testing"

	"github.com/syncstore/syncstore/shard"
)

func TestParseSlotRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want shard.Range
		bad  bool
	}{
		{in: "0-1023", want: shard.Range{Start: 0, End: 1024}},
		{in: "7", want: shard.Range{Start: 7, End: 8}},
		{in: "4095-4095", want: shard.Range{Start: 4095, End: 4096}},
		{in: "10-9", bad: true},
		{in: "0-4096", bad: true},
		{in: "-3", bad: true},
		{in: "a-b", bad: true},
		{in: "", bad: true},
	} {
		got, err := parseSlotRange(tc.in)
		if tc.bad != (err != nil) || (!tc.bad && got != tc.want) {
			t.Errorf("parseSlotRange(%q) = %v, %v; want %v (bad %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
