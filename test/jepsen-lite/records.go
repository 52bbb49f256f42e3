package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Collections of the workload: a few hot ones take half the writes, and
// every worker's device follows the hot ones.
const (
	hotCollections  = 4
	coldCollections = 24
	recordKeys      = 6
	recordPageSize  = 4 // small pages, so syncs and reads span several
)

func collectionName(rng *rand.Rand) string {
	if rng.IntN(2) == 0 {
		return fmt.Sprintf("col-hot-%d", rng.IntN(hotCollections))
	}
	return fmt.Sprintf("col-cold-%d", rng.IntN(coldCollections))
}

func allCollections() []string {
	var out []string
	for i := range hotCollections {
		out = append(out, fmt.Sprintf("col-hot-%d", i))
	}
	for i := range coldCollections {
		out = append(out, fmt.Sprintf("col-cold-%d", i))
	}
	return out
}

// doRecordWrite writes puts and deletes of random keys, some of them only
// if the collection is still at the version the worker last saw.
func doRecordWrite(cl *client.Client, rec *recorder, w int, rng *rand.Rand, coll, key string) {
	op := history.Op{Process: w, Kind: history.RecordWrite, Timeline: coll, Key: key, Puts: map[string]string{}}
	var ops []*syncv1.RecordOp
	for range 1 + rng.IntN(3) {
		k := fmt.Sprint("r", rng.IntN(recordKeys))
		if _, dup := op.Puts[k]; dup || slices.Contains(op.Deletes, k) {
			continue
		}
		if rng.IntN(4) == 0 {
			op.Deletes = append(op.Deletes, k)
			ops = append(ops, client.Delete(k))
		} else {
			op.Puts[k] = key + "/" + k
			ops = append(ops, client.Put(k, []byte(op.Puts[k])))
		}
	}
	doWrite(rec, op, func(ctx context.Context) (uint64, error) {
		resp, err := cl.Write(ctx, coll, ops, client.WriteOptions{IdempotencyKey: key})
		return resp.GetVersion(), err
	})
}

// device is one worker's copy of the hot collections, kept by Sync; the
// checker replays its pages from the history.
type device struct {
	version map[string]uint64
}

func newDevice() *device { return &device{version: map[string]uint64{}} }

// doRecordSync brings the device's copy of a collection to the head: Sync
// pages from its version, and after a RESET a paged full read followed by a
// sync from the version it began at. Every page is recorded; a failed page
// ends the attempt (the next one resumes from the device's version).
func doRecordSync(cl *client.Client, rec *recorder, w int, dev *device, coll string) {
	for range 50 {
		op := history.Op{Process: w, Kind: history.RecordSync, Timeline: coll, After: dev.version[coll], Invoke: rec.now()}
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		resp, err := cl.SyncRecords(ctx, coll, op.After, recordPageSize, client.Linearizable)
		cancel()
		op.Complete = rec.now()
		if err != nil {
			op.Outcome, op.Error = history.Fail, err.Error()
			rec.add(op)
			return
		}
		op.Outcome, op.Status, op.Seq, op.Digest = history.OK, resp.GetStatus().String(), resp.GetVersion(), resp.GetDigest()
		op.Records = recordsOf(resp.GetChanges())
		rec.add(op)
		switch resp.GetStatus() {
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_RESET:
			if !readWhole(cl, rec, w, dev, coll) {
				return
			}
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_MORE:
			dev.version[coll] = resp.GetVersion()
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_AHEAD:
			return // the checker reports it
		default:
			dev.version[coll] = resp.GetVersion()
			return
		}
	}
}

// readWhole pages through a collection; the device then syncs from the
// version of the first page. False when a page failed (the device keeps
// its version below the horizon and meets RESET again).
func readWhole(cl *client.Client, rec *recorder, w int, dev *device, coll string) bool {
	after := ""
	for first := true; ; first = false {
		op := history.Op{Process: w, Kind: history.RecordGet, Timeline: coll, AfterKey: after, Invoke: rec.now()}
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		page, err := cl.Get(ctx, coll, nil, after, recordPageSize, client.Linearizable)
		cancel()
		op.Complete = rec.now()
		if err != nil {
			op.Outcome, op.Error = history.Fail, err.Error()
			rec.add(op)
			return false
		}
		op.Outcome, op.Seq, op.Digest, op.More = history.OK, page.GetVersion(), page.GetDigest(), page.GetMore()
		op.Records = recordsOf(page.GetRecords())
		rec.add(op)
		if first {
			dev.version[coll] = page.GetVersion()
		}
		if !page.GetMore() {
			return true
		}
		after = page.GetNextAfterKey()
	}
}

func recordsOf(recs []*syncv1.Record) []history.Record {
	out := make([]history.Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, history.Record{Key: r.GetKey(), Version: r.GetVersion(), Value: string(r.GetValue()), Deleted: r.GetDeleted()})
	}
	return out
}

// readCollections reads every collection whole from every replica that
// holds it (stale reads of the settled replicas).
func readCollections(ctx context.Context, perNode map[string]*client.Client, replicasOf func(string) []string) (map[string]map[string]history.Collection, error) {
	out := map[string]map[string]history.Collection{}
	for _, coll := range allCollections() {
		for _, node := range replicasOf(coll) {
			var c history.Collection
			after := ""
			for first := true; ; first = false {
				page, err := perNode[node].Get(ctx, coll, nil, after, 1000, client.Stale)
				if err != nil {
					return out, fmt.Errorf("read %s on %s: %w", coll, node, err)
				}
				if first {
					c.Version, c.Digest = page.GetVersion(), page.GetDigest()
				}
				c.Records = append(c.Records, recordsOf(page.GetRecords())...)
				if !page.GetMore() {
					break
				}
				after = page.GetNextAfterKey()
			}
			if out[node] == nil {
				out[node] = map[string]history.Collection{}
			}
			out[node][coll] = c
		}
	}
	return out, nil
}
