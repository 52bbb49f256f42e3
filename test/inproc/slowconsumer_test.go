package inproc

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/server"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// TestSlowSubscriberGetsAGapNotUnboundedBuffering: a subscriber opens a
// stream and stops reading while 3,000 entries of 1 KiB are appended. The
// server queues at most its stream limit (64 entries / 64 KiB here) however
// far the subscriber falls behind; when the subscriber reads again it gets
// the queued entries in order, then a Gap marker, and catching up with Pull
// from there yields every entry exactly once.
func TestSlowSubscriberGetsAGapNotUnboundedBuffering(t *testing.T) {
	const (
		entries     = 3000
		bufferBytes = 64 << 10
		tl          = "user:slow"
	)
	limits := server.DefaultStreamLimits()
	limits.BufferEvents, limits.BufferBytes = 64, bufferBytes
	// One node: it leads every group, so the stream is never Moved and the
	// test sees only the stall.
	c := testcluster.New(t, 1, func(cfg *node.Config) { cfg.Shards = 2 }, server.WithStreamLimits(limits))
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	conn, err := grpc.NewClient(c.Members[0].GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := syncv1.NewSyncClient(conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&syncv1.SubscribeRequest{Add: []*syncv1.SubscribeFrom{{Timeline: proto.String(tl), AfterSeq: proto.Uint64(0)}}}); err != nil {
		t.Fatal(err)
	}

	payload := make([]byte, 1024)
	var maxQueued int64
	for i := range entries {
		if _, err := cl.Append(ctx, tl, payload, client.AppendOptions{}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		maxQueued = max(maxQueued, c.Server(0).QueuedBytes())
	}
	// The entry queue is bounded by the limit (plus one page's overshoot at
	// most: a page is sized to the free entry slots, not bytes).
	if limit := int64(bufferBytes + 100*(1024+64)); maxQueued > limit {
		t.Fatalf("the server queued %d bytes for one stalled stream; the bound is %d", maxQueued, limit)
	}
	t.Logf("at most %d bytes queued for the stalled stream", maxQueued)

	// Read again: queued entries in order, then the gap.
	var got []uint64
	var gapFrom uint64
	for gapFrom == 0 {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d entries: %v", len(got), err)
		}
		switch e := ev.GetEvent().(type) {
		case *syncv1.SubscribeEvent_Entry:
			got = append(got, e.Entry.GetSeq())
		case *syncv1.SubscribeEvent_Gap:
			if e.Gap.GetTimeline() != tl {
				t.Fatalf("gap for %q", e.Gap.GetTimeline())
			}
			gapFrom = e.Gap.GetFromSeq()
		case *syncv1.SubscribeEvent_Heartbeat:
		default:
			t.Fatalf("unexpected event %v", ev)
		}
	}
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("streamed seqs %v...: entry %d has seq %d", got[:min(len(got), 10)], i, s)
		}
	}
	if gapFrom != uint64(len(got))+1 {
		t.Fatalf("gap from %d after %d streamed entries", gapFrom, len(got))
	}
	// Catch up by Pull.
	after := gapFrom - 1
	for {
		page, err := cl.Pull(ctx, tl, after, 1000, client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.GetEntries() {
			if e.GetSeq() != after+1 {
				t.Fatalf("pull gave seq %d after %d", e.GetSeq(), after)
			}
			after = e.GetSeq()
		}
		if page.GetStatus() != syncv1.PullStatus_PULL_STATUS_MORE {
			break
		}
	}
	if after != entries {
		t.Fatalf("caught up to %d, want %d", after, entries)
	}
	t.Logf("%d entries streamed, gap from %d, %d pulled", len(got), gapFrom, entries-len(got))
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	cancel()
}
