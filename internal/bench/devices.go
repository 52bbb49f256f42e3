package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// DeviceReconnectConfig: a user in Conversations conversations, each with
// one message; while the device is away Active of them get PerActive new
// messages each.
type DeviceReconnectConfig struct {
	Conversations int
	Active        int
	PerActive     int
	PayloadBytes  int
	Repeats       int
}

// DeviceReconnectResult is what the reconnecting device pays to get its
// conversation list and the new messages: syncing conversations/<user>
// from its version and pulling its timeline from its cursor, against
// reading the list whole and pulling every conversation's history.
type DeviceReconnectResult struct {
	Config DeviceReconnectConfig `json:"config"`
	// Changed: conversation records the Sync brought; Messages: entries
	// the Pull brought.
	Changed  int  `json:"changed"`
	Messages int  `json:"messages"`
	Delta    Cost `json:"delta"`
	Full     Cost `json:"full"`
}

// DeviceReconnect sets the user up through cl, then measures on a fresh
// connection to addr.
func DeviceReconnect(ctx context.Context, cl *client.Client, addr string, cfg DeviceReconnectConfig) (DeviceReconnectResult, error) {
	res := DeviceReconnectResult{Config: cfg}
	if cfg.Conversations < 1 || cfg.Active < 0 || cfg.Active > cfg.Conversations || cfg.PerActive < 1 || cfg.Repeats < 1 {
		return res, fmt.Errorf("bench: device reconnect needs conversations >= 1, 0 <= active <= conversations, per-active >= 1, repeats >= 1; got %+v", cfg)
	}
	run := rand.Uint64()
	user, peer := fmt.Sprintf("bench-user-%x", run), fmt.Sprintf("bench-peer-%x", run)
	payload := make([]byte, cfg.PayloadBytes)
	if _, err := cl.Login(ctx, user, "phone", "phone", "bench-"+user, nil); err != nil {
		return res, err
	}
	conv := func(i int) string { return fmt.Sprintf("bench-conv-%x-%d", run, i) }
	send := func(i, n int) error {
		for j := range n {
			if _, err := cl.Send(ctx, conv(i), peer, []string{user}, payload, client.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-%d-%d-%d", conv(i), i, j, time.Now().UnixNano())}); err != nil {
				return err
			}
		}
		return nil
	}
	waitHead := func(want uint64) error {
		for {
			h, err := cl.Head(ctx, user, client.Linearizable)
			if err != nil || h >= want {
				return err
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %d deliveries to %s: %w", want, user, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	for i := range cfg.Conversations {
		if err := send(i, 1); err != nil {
			return res, err
		}
	}
	if err := waitHead(uint64(cfg.Conversations)); err != nil {
		return res, err
	}
	// What the device holds when it goes away.
	list := shard.ConversationsCollection(user)
	held, err := cl.SyncRecords(ctx, list, 0, 1000, client.Linearizable)
	if err != nil {
		return res, err
	}
	cursor := uint64(cfg.Conversations)
	if _, err := cl.Ack(ctx, user, "phone", user, cursor); err != nil {
		return res, err
	}
	for i := range cfg.Active {
		if err := send(i, cfg.PerActive); err != nil {
			return res, err
		}
	}
	if err := waitHead(cursor + uint64(cfg.Active*cfg.PerActive)); err != nil {
		return res, err
	}

	var wire wireCounter
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(&wire),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return res, err
	}
	defer conn.Close()
	rc, sc := syncv1.NewRecordsClient(conn), syncv1.NewSyncClient(conn)
	pullAll := func(tl string, after uint64) (calls, entries int, err error) {
		for {
			resp, err := sc.Pull(ctx, &syncv1.PullRequest{Timeline: proto.String(tl), AfterSeq: proto.Uint64(after), Limit: proto.Uint32(1000)})
			calls++
			if err != nil {
				return 0, 0, err
			}
			entries += len(resp.GetEntries())
			if resp.GetStatus() != syncv1.PullStatus_PULL_STATUS_MORE {
				return calls, entries, nil
			}
			after = resp.GetEntries()[len(resp.GetEntries())-1].GetSeq()
		}
	}
	measure := func(read func() (calls, records int, err error)) (Cost, error) {
		return medianCost(&wire, cfg.Repeats, read)
	}
	res.Delta, err = measure(func() (int, int, error) {
		resp, err := rc.Sync(ctx, &syncv1.RecordSyncRequest{Collection: proto.String(list), SinceVersion: proto.Uint64(held.GetVersion()), Limit: proto.Uint32(1000)})
		if err != nil {
			return 0, 0, err
		}
		if resp.GetStatus() != syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_OK {
			return 0, 0, fmt.Errorf("sync of %s: %v", list, resp.GetStatus())
		}
		calls, entries, err := pullAll(user, cursor)
		res.Changed, res.Messages = len(resp.GetChanges()), entries
		return 1 + calls, len(resp.GetChanges()) + entries, err
	})
	if err != nil {
		return res, err
	}
	res.Full, err = measure(func() (calls, records int, err error) {
		resp, err := rc.Get(ctx, &syncv1.GetRequest{Collection: proto.String(list), Limit: proto.Uint32(1000)})
		if err != nil {
			return 0, 0, err
		}
		calls, records = 1, len(resp.GetRecords())
		for i := range cfg.Conversations {
			n, e, err := pullAll(conv(i), 0)
			if err != nil {
				return 0, 0, err
			}
			calls, records = calls+n, records+e
		}
		return calls, records, nil
	})
	return res, err
}
