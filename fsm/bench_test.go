package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// BenchmarkApplyAppend is the state machine's share of one append: decode,
// validation, seq, dedupe record and the stored entry, with the state's
// unsynced commits (on the committer goroutine) included in the time and
// the allocations. Appends of 256 bytes with idempotency keys go to 10,000
// timelines in batches of 16, as a loaded leader hands them over.
func BenchmarkApplyAppend(b *testing.B) {
	const batch = 16
	f := newFSM(b)
	payload := string(make([]byte, 256))
	logs := make([]*raft.Log, b.N)
	for i := range logs {
		data, err := EncodeCommand(appendCmd(fmt.Sprint("tl-", i%10000), payload, fmt.Sprint("key-", i), 1000))
		if err != nil {
			b.Fatal(err)
		}
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < len(logs); i += batch {
		for _, r := range f.ApplyBatch(logs[i:min(i+batch, len(logs))]) {
			if res, _ := r.(*Result); res == nil || res.Err != nil {
				b.Fatalf("apply: %+v", r)
			}
		}
	}
	if _, err := f.Digest(); err != nil { // commits what is pending, inside the timing
		b.Fatal(err)
	}
}

// BenchmarkApplyDeliver is the state machine's share of one delivery: a
// Deliver of one message to 200 members (of 10,000 users), each item an
// entry in the member's timeline, its delivery mark and read state, and
// its conversation-list record.
func BenchmarkApplyDeliver(b *testing.B) {
	const members = 200
	f := newFSM(b)
	n := b.N/members + 1
	logs := make([]*raft.Log, n)
	for i := range logs {
		var items []*fsmpb.DeliveryItem
		for m := range members {
			items = append(items, &fsmpb.DeliveryItem{Timeline: fmt.Sprint("u-", (i*members+m)%10000), Conversation: fmt.Sprint("c-", i%50),
				ConversationSeq: uint64(i + 1), DeliverySeq: uint64((i*members+m)/10000*1 + 1), Sender: "s", Payload: make([]byte, 256)})
		}
		data, err := EncodeCommand(deliverCmd(1000, items...))
		if err != nil {
			b.Fatal(err)
		}
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, l := range logs {
		if res := f.Apply(l).(*Result); res.Err != nil {
			b.Fatalf("apply: %v", res.Err)
		}
	}
	if _, err := f.Digest(); err != nil {
		b.Fatal(err)
	}
}
