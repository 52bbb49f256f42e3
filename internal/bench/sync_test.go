package bench

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The sync benchmarks, tiny, on a one-node cluster: they run and their
// figures add up.
func TestSyncBenchmarksAddUp(t *testing.T) {
	c := testcluster.New(t, 1, func(cfg *node.Config) { cfg.Shards = 2 })
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	push, err := Push(ctx, cl, PushConfig{Timelines: 20, Appenders: 4, PayloadBytes: 16, Duration: 300 * time.Millisecond, OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if push.Appended == 0 || push.Missing != 0 || push.Received < push.Appended || push.P50 > push.Max {
		t.Fatalf("push: %+v", push)
	}

	fan, err := FanOut(ctx, cl, FanOutConfig{Members: 10, Messages: 3, PayloadBytes: 16, OpTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if fan.Sent != 3 || fan.Incomplete != 0 || fan.AckP50 > fan.AckMax {
		t.Fatalf("fan-out: %+v", fan)
	}

	rc, err := Reconnect(ctx, cl, c.Members[0].GRPCAddr, ReconnectConfig{Entries: 50, Missed: 5, PayloadBytes: 100, PageSize: 20})
	if err != nil {
		t.Fatal(err)
	}
	if rc.DeltaEntries != 5 || rc.FullEntries != 50 || rc.FullCalls != 3 || rc.DeltaBytes <= 5*100 || rc.FullBytes <= 50*100 || rc.UpToDateBytes >= rc.DeltaBytes {
		t.Fatalf("reconnect: %+v", rc)
	}

	recs, err := RecordsSync(ctx, cl, c.Members[0].GRPCAddr, RecordsSyncConfig{Records: 600, Changes: 3, ValueBytes: 50, Many: 5, ManyRecords: 4, Repeats: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Changes hit distinct records; a full read of 600 in pages of 1000 is one call.
	if recs.Sync.Records != 3 || recs.FullRead.Records != 600 || recs.FullRead.Calls != 1 || recs.Sync.Bytes >= recs.FullRead.Bytes ||
		recs.SyncMany.Records != 5 || recs.SyncMany.Calls != 1 || recs.SeparateSyncs.Records != 5 || recs.SeparateSyncs.Calls != 5 {
		t.Fatalf("records: %+v", recs)
	}

	dr, err := DeviceReconnect(ctx, cl, c.Members[0].GRPCAddr, DeviceReconnectConfig{Conversations: 6, Active: 2, PerActive: 3, PayloadBytes: 20, Repeats: 3})
	if err != nil {
		t.Fatal(err)
	}
	// 2 conversation records changed, 6 messages new: one Sync and one Pull;
	// the full read gets 6 records and every conversation's 1 or 4 messages.
	if dr.Changed != 2 || dr.Messages != 6 || dr.Delta.Calls != 2 || dr.Full.Calls != 7 || dr.Full.Records != 6+2*4+4 || dr.Delta.Bytes >= dr.Full.Bytes {
		t.Fatalf("device reconnect: %+v", dr)
	}
}
