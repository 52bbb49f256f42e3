package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// ReconnectConfig: a timeline of Entries entries; a device that holds all
// but the last Missed syncs.
type ReconnectConfig struct {
	Entries      int
	Missed       int
	PayloadBytes int
	PageSize     uint32
}

// ReconnectResult compares the gRPC bytes (requests and responses, as
// framed on the connection) of pulling from the device's seq with
// fetching the whole timeline, and of the "nothing changed" answer.
type ReconnectResult struct {
	Config        ReconnectConfig `json:"config"`
	DeltaBytes    int64           `json:"delta_bytes"`
	DeltaEntries  int             `json:"delta_entries"`
	FullBytes     int64           `json:"full_bytes"`
	FullEntries   int             `json:"full_entries"`
	FullCalls     int             `json:"full_calls"`
	UpToDateBytes int64           `json:"up_to_date_bytes"`
}

// wireCounter counts the bytes of gRPC messages on one connection.
type wireCounter struct{ bytes atomic.Int64 }

func (w *wireCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (w *wireCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch p := s.(type) {
	case *stats.InPayload:
		w.bytes.Add(int64(p.WireLength))
	case *stats.OutPayload:
		w.bytes.Add(int64(p.WireLength))
	case *stats.InHeader:
		w.bytes.Add(int64(p.WireLength))
	}
}
func (w *wireCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (w *wireCounter) HandleConn(context.Context, stats.ConnStats) {}

// Reconnect fills a timeline through cl, then measures pulls on a fresh
// connection to addr (the timeline's leader, or any node, which forwards:
// only this connection's bytes are counted).
func Reconnect(ctx context.Context, cl *client.Client, addr string, cfg ReconnectConfig) (ReconnectResult, error) {
	if cfg.Entries < 1 || cfg.Missed < 0 || cfg.Missed > cfg.Entries || cfg.PageSize < 1 {
		return ReconnectResult{}, fmt.Errorf("bench: reconnect needs 0 <= missed <= entries and a page size; got %+v", cfg)
	}
	tl := fmt.Sprintf("reconnect-%x", rand.Uint64())
	payload := make([]byte, cfg.PayloadBytes)
	for i := range cfg.Entries {
		if _, err := cl.Append(ctx, tl, payload, client.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-%d", tl, i)}); err != nil {
			return ReconnectResult{}, fmt.Errorf("fill %s: %w", tl, err)
		}
	}
	var wire wireCounter
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(&wire),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return ReconnectResult{}, err
	}
	defer conn.Close()
	sync := syncv1.NewSyncClient(conn)
	pullAll := func(after uint64) (entries, calls int, bytes int64, err error) {
		start := wire.bytes.Load()
		for {
			resp, err := sync.Pull(ctx, &syncv1.PullRequest{Timeline: proto.String(tl), AfterSeq: proto.Uint64(after), Limit: proto.Uint32(cfg.PageSize)})
			calls++
			if err != nil {
				return 0, 0, 0, err
			}
			entries += len(resp.GetEntries())
			if n := len(resp.GetEntries()); n > 0 {
				after = resp.GetEntries()[n-1].GetSeq()
			}
			if resp.GetStatus() != syncv1.PullStatus_PULL_STATUS_MORE {
				return entries, calls, wire.bytes.Load() - start, nil
			}
		}
	}
	res := ReconnectResult{Config: cfg}
	if _, _, _, err := pullAll(uint64(cfg.Entries)); err != nil { // warm the connection up
		return res, err
	}
	if _, _, res.UpToDateBytes, err = pullAll(uint64(cfg.Entries)); err != nil {
		return res, err
	}
	if res.DeltaEntries, _, res.DeltaBytes, err = pullAll(uint64(cfg.Entries - cfg.Missed)); err != nil {
		return res, err
	}
	if res.FullEntries, res.FullCalls, res.FullBytes, err = pullAll(0); err != nil {
		return res, err
	}
	return res, nil
}
