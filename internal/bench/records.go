package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// RecordsSyncConfig: one collection of Records records with Changes of them
// changed since the device's version; and Many collections of ManyRecords
// records, each with one change, synced by a reconnecting device.
type RecordsSyncConfig struct {
	Records     int
	Changes     int
	ValueBytes  int
	Many        int
	ManyRecords int
	// Repeats: each measured read is repeated this many times; the median
	// is reported.
	Repeats int
}

// Cost is the median latency and the gRPC bytes (both directions, as framed)
// of one way of reading.
type Cost struct {
	Latency time.Duration `json:"latency_ns"`
	Bytes   int64         `json:"bytes"`
	Calls   int           `json:"calls"`
	Records int           `json:"records"`
}

// RecordsSyncResult compares syncing from a version with reading whole.
type RecordsSyncResult struct {
	Config        RecordsSyncConfig `json:"config"`
	Sync          Cost              `json:"sync"`
	FullRead      Cost              `json:"full_read"`
	SyncMany      Cost              `json:"sync_many"`
	SeparateSyncs Cost              `json:"separate_syncs"`
}

// RecordsSync fills the collections through cl, then measures reads on a
// fresh connection to addr (any node: it forwards; only that connection's
// bytes are counted).
func RecordsSync(ctx context.Context, cl *client.Client, addr string, cfg RecordsSyncConfig) (RecordsSyncResult, error) {
	res := RecordsSyncResult{Config: cfg}
	if cfg.Records < 1 || cfg.Changes < 1 || cfg.Changes > cfg.Records || cfg.Many < 1 || cfg.ManyRecords < 1 || cfg.Repeats < 1 {
		return res, fmt.Errorf("bench: records sync needs 1 <= changes <= records, many and many-records >= 1, repeats >= 1; got %+v", cfg)
	}
	run := rand.Uint64()
	value := make([]byte, cfg.ValueBytes)
	fill := func(coll string, n int) (uint64, error) {
		var version uint64
		for start := 0; start < n; start += 256 {
			var ops []*syncv1.RecordOp
			for i := start; i < min(n, start+256); i++ {
				ops = append(ops, client.Put(fmt.Sprintf("r%07d", i), value))
			}
			resp, err := cl.Write(ctx, coll, ops, client.WriteOptions{IdempotencyKey: fmt.Sprintf("%s-fill-%d", coll, start)})
			if err != nil {
				return 0, fmt.Errorf("fill %s: %w", coll, err)
			}
			version = resp.GetVersion()
		}
		return version, nil
	}
	change := func(coll string, n int) error {
		for i := range n {
			if _, err := cl.Write(ctx, coll, []*syncv1.RecordOp{client.Put(fmt.Sprintf("r%07d", i*7%max(1, cfg.Records)), []byte("changed"))}, client.WriteOptions{}); err != nil {
				return err
			}
		}
		return nil
	}

	big := fmt.Sprintf("bench-big-%x", run)
	since, err := fill(big, cfg.Records)
	if err != nil {
		return res, err
	}
	if err := change(big, cfg.Changes); err != nil {
		return res, err
	}
	var many []string
	sinces := map[string]uint64{}
	for i := range cfg.Many {
		coll := fmt.Sprintf("bench-many-%x-%d", run, i)
		v, err := fill(coll, cfg.ManyRecords)
		if err != nil {
			return res, err
		}
		many, sinces[coll] = append(many, coll), v
		if err := change(coll, 1); err != nil {
			return res, err
		}
	}

	var wire wireCounter
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(&wire),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return res, err
	}
	defer conn.Close()
	rc := syncv1.NewRecordsClient(conn)
	const page = 1000
	syncFrom := func(coll string, v uint64) (calls, records int, err error) {
		for {
			resp, err := rc.Sync(ctx, &syncv1.RecordSyncRequest{Collection: proto.String(coll), SinceVersion: proto.Uint64(v), Limit: proto.Uint32(page)})
			calls++
			if err != nil {
				return 0, 0, err
			}
			records += len(resp.GetChanges())
			v = resp.GetVersion()
			if resp.GetStatus() != syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_MORE {
				return calls, records, nil
			}
		}
	}
	measure := func(read func() (calls, records int, err error)) (Cost, error) {
		return medianCost(&wire, cfg.Repeats, read)
	}
	if res.Sync, err = measure(func() (int, int, error) { return syncFrom(big, since) }); err != nil {
		return res, err
	}
	if res.FullRead, err = measure(func() (calls, records int, err error) {
		after := ""
		for {
			resp, err := rc.Get(ctx, &syncv1.GetRequest{Collection: proto.String(big), AfterKey: proto.String(after), Limit: proto.Uint32(page)})
			calls++
			if err != nil {
				return 0, 0, err
			}
			records += len(resp.GetRecords())
			if !resp.GetMore() {
				return calls, records, nil
			}
			after = resp.GetNextAfterKey()
		}
	}); err != nil {
		return res, err
	}
	if res.SyncMany, err = measure(func() (int, int, error) {
		req := &syncv1.SyncManyRequest{}
		for _, c := range many {
			req.Collections = append(req.Collections, &syncv1.RecordSyncRequest{Collection: proto.String(c), SinceVersion: proto.Uint64(sinces[c]), Limit: proto.Uint32(page)})
		}
		resp, err := rc.SyncMany(ctx, req)
		if err != nil {
			return 0, 0, err
		}
		records := 0
		for _, r := range resp.GetResults() {
			if r.GetErrorCode() != 0 {
				return 0, 0, fmt.Errorf("SyncMany: %s: %s", r.GetCollection(), r.GetErrorMessage())
			}
			records += len(r.GetSync().GetChanges())
		}
		return 1, records, nil
	}); err != nil {
		return res, err
	}
	res.SeparateSyncs, err = measure(func() (calls, records int, err error) {
		for _, c := range many {
			n, r, err := syncFrom(c, sinces[c])
			if err != nil {
				return 0, 0, err
			}
			calls, records = calls+n, records+r
		}
		return calls, records, nil
	})
	return res, err
}

// medianCost runs read once to warm up, then repeats times: the median
// latency, and the calls, records and bytes on the wire (counted by wire)
// of the last run.
func medianCost(wire *wireCounter, repeats int, read func() (calls, records int, err error)) (Cost, error) {
	if _, _, err := read(); err != nil {
		return Cost{}, err
	}
	var lats []time.Duration
	var c Cost
	for range repeats {
		b0, t0 := wire.bytes.Load(), time.Now()
		calls, records, err := read()
		if err != nil {
			return Cost{}, err
		}
		lats = append(lats, time.Since(t0))
		c.Bytes, c.Calls, c.Records = wire.bytes.Load()-b0, calls, records
	}
	slices.Sort(lats)
	c.Latency = lats[len(lats)/2]
	return c, nil
}
