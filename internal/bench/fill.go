package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// FillConfig fills a cluster with data to measure what is done to a full
// one (a backup, a restore): timeline entries written by conversation
// sends (each send stores one conversation entry and one entry in each
// member's timeline, the bulk of the volume) and versioned collections.
type FillConfig struct {
	// Entries is how many timeline entries to write at least.
	Entries int
	// Members of each conversation, the sender included. At most
	// LightAbove (the server's) keeps every member entry full.
	Members int
	// Users are the pool members are drawn from (each user's timeline
	// gets about Entries/Users entries).
	Users        int
	PayloadBytes int
	Collections  int
	// Records written into each collection, RecordsPerWrite to a write.
	Records, RecordsPerWrite int
	Clients                  int
	OpTimeout                time.Duration
}

// FillResult is what a fill wrote.
type FillResult struct {
	Config      FillConfig `json:"config"`
	Sends       int64      `json:"sends"`
	Entries     int64      `json:"entries"`
	Collections int64      `json:"collections"`
	Records     int64      `json:"records"`
	// UserPrefix and CollectionPrefix name what was written: users
	// UserPrefix+"0".. and collections CollectionPrefix+"0"...
	UserPrefix       string        `json:"user_prefix"`
	CollectionPrefix string        `json:"collection_prefix"`
	Took             time.Duration `json:"took_ns"`
}

// Fill writes cfg's data through cl and waits until every member timeline
// holds what was sent to it (fan-out is asynchronous).
func Fill(ctx context.Context, cl *client.Client, cfg FillConfig) (FillResult, error) {
	if cfg.Members < 2 || cfg.Users < cfg.Members || cfg.Clients < 1 || cfg.OpTimeout <= 0 || cfg.RecordsPerWrite < 1 {
		return FillResult{}, fmt.Errorf("bench: fill needs members >= 2, users >= members, clients, a timeout and records per write; got %+v", cfg)
	}
	start := time.Now()
	run := rand.Uint64()
	res := FillResult{Config: cfg, UserPrefix: fmt.Sprintf("fill-%x-u", run), CollectionPrefix: fmt.Sprintf("fill-%x-coll", run)}
	users := make([]string, cfg.Users)
	for i := range users {
		users[i] = fmt.Sprint(res.UserPrefix, i)
	}
	payload := make([]byte, cfg.PayloadBytes)
	sends := (cfg.Entries + cfg.Members - 1) / cfg.Members // a send stores Members+1 entries
	expected := make([]atomic.Int64, cfg.Users)
	var next, sent, recs, colls atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	fail := func(err error) { errOnce.Do(func() { firstErr = err; failed.Store(true) }) }
	var wg sync.WaitGroup
	for w := range cfg.Clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(run, uint64(w)))
			for {
				i := next.Add(1) - 1
				if i >= int64(sends) || ctx.Err() != nil || failed.Load() {
					return
				}
				// Members: a random run of the pool, so timelines fill evenly.
				at := rng.IntN(cfg.Users)
				members := make([]string, cfg.Members)
				for k := range members {
					members[k] = users[(at+k)%cfg.Users]
				}
				octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
				_, err := cl.Send(octx, fmt.Sprintf("fill-%x-c%d", run, i), members[0], members[1:], payload,
					client.AppendOptions{IdempotencyKey: fmt.Sprint("fill-", i)})
				cancel()
				if err != nil {
					fail(fmt.Errorf("send %d: %w", i, err))
					return
				}
				for k := range members {
					expected[(at+k)%cfg.Users].Add(1)
				}
				sent.Add(1)
			}
		})
	}
	for w := range cfg.Clients {
		wg.Go(func() {
			for {
				c := colls.Add(1) - 1
				if c >= int64(cfg.Collections) || ctx.Err() != nil || failed.Load() {
					return
				}
				coll := fmt.Sprint(res.CollectionPrefix, c)
				for r := 0; r < cfg.Records; r += cfg.RecordsPerWrite {
					var ops []*syncv1.RecordOp
					for k := r; k < min(cfg.Records, r+cfg.RecordsPerWrite); k++ {
						ops = append(ops, client.Put(fmt.Sprint("k", k), payload))
					}
					octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
					_, err := cl.Write(octx, coll, ops, client.WriteOptions{IdempotencyKey: fmt.Sprintf("fill-%d-%d-%d", w, c, r)})
					cancel()
					if err != nil {
						fail(fmt.Errorf("write %s: %w", coll, err))
						return
					}
					recs.Add(int64(len(ops)))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Sends, res.Records = sent.Load(), recs.Load()
	res.Collections = min(colls.Load(), int64(cfg.Collections))
	res.Entries = res.Sends * int64(cfg.Members+1)
	// Fan-out is asynchronous: wait until each user's head holds its share.
	for i, u := range users {
		for {
			head, err := cl.Head(ctx, u, client.Linearizable)
			if err == nil && int64(head) >= expected[i].Load() {
				break
			}
			if ctx.Err() != nil {
				return res, errors.Join(fmt.Errorf("bench: %s holds %d of %d entries", u, head, expected[i].Load()), err, ctx.Err())
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	res.Took = time.Since(start)
	return res, nil
}
