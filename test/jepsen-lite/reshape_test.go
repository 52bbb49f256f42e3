package main

import (
	"testing"

	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

func TestAppendGap(t *testing.T) {
	moved := "t-moved"
	s := uint32(shard.SlotOf(moved))
	ranges := []*syncv1.SlotRange{{Start: s, End: s + 1}}
	other := "t-other"
	for i := 0; shard.SlotOf(other) == shard.SlotOf(moved); i++ {
		other += "x"
	}
	ack := func(tl string, at int64) history.Op {
		return history.Op{Kind: history.Append, Timeline: tl, Outcome: history.OK, Complete: at}
	}
	ops := []history.Op{
		ack(moved, 10), ack(moved, 20), ack(other, 25), ack(moved, 70), ack(moved, 75),
		{Kind: history.Append, Timeline: moved, Outcome: history.Fail, Complete: 40},
	}
	cases := []struct {
		name     string
		from, to int64
		want     int64
	}{
		{"a window inside one gap", 30, 40, 50},
		{"a window over the acks around it", 15, 72, 50},
		{"before the long gap", 10, 19, 10},
		{"after every ack", 80, 90, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := appendGap(ops, ranges, tc.from, tc.to); got != tc.want {
				t.Fatalf("appendGap(%d, %d) = %d, want %d", tc.from, tc.to, got, tc.want)
			}
		})
	}
}
