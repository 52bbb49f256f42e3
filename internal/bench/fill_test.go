package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
)

// TestFillWritesWhatItSays: a small fill's counts are what the cluster
// holds: the users' heads add up to every member entry, and each
// collection is at the version of its records.
func TestFillWritesWhatItSays(t *testing.T) {
	c := testcluster.New(t, 1, func(cfg *node.Config) { cfg.Shards = 2 })
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := FillConfig{Entries: 200, Members: 10, Users: 20, PayloadBytes: 8, Collections: 5, Records: 7, RecordsPerWrite: 3, Clients: 3, OpTimeout: 10 * time.Second}
	res, err := Fill(ctx, cl, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sends != 20 || res.Entries != 220 || res.Collections != 5 || res.Records != 35 {
		t.Fatalf("fill: %+v", res)
	}
	var total uint64
	for i := range cfg.Users {
		head, err := cl.Head(ctx, fmt.Sprint(res.UserPrefix, i), client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		total += head
	}
	if total != uint64(res.Sends)*uint64(cfg.Members) {
		t.Fatalf("the users hold %d entries, want %d", total, res.Sends*int64(cfg.Members))
	}
	for i := range cfg.Collections {
		resp, err := cl.SyncRecords(ctx, fmt.Sprint(res.CollectionPrefix, i), 0, 100, client.Linearizable)
		if err != nil || len(resp.GetChanges()) != cfg.Records {
			t.Fatalf("collection %d: %d records, %v", i, len(resp.GetChanges()), err)
		}
	}
}
