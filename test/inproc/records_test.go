package inproc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// recordWrite is one write a records writer made: its ops, and once
// acknowledged, the version it got.
type recordWrite struct {
	collection string
	puts       map[string]string // key -> value
	deletes    map[string]bool
	version    uint64 // 0 until acknowledged
	refused    bool   // a condition failed: certainly not applied
}

// recordsWorkload: writers doing puts, deletes and conditional writes to
// random collections, each write retried with its idempotency key until it
// is answered.
type recordsWorkload struct {
	mu     sync.Mutex
	writes map[string]*recordWrite // by write id (= idempotency key)
	acked  atomic.Int64
	errors atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
}

// hotCollections: the first this many collections get half the writes.
const hotCollections = 60

func startRecordsWorkload(t *testing.T, cl *client.Client, writers int, collections []string) *recordsWorkload {
	w := &recordsWorkload{writes: map[string]*recordWrite{}, stop: make(chan struct{})}
	for id := range writers {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(id), 7))
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				coll := collections[rng.IntN(len(collections))]
				if rng.IntN(2) == 0 { // half the writes go to a few hot collections (the devices follow them)
					coll = collections[rng.IntN(hotCollections)]
				}
				if !w.one(t, cl, rng, fmt.Sprintf("w%d-%d", id, i), coll) {
					return
				}
			}
		})
	}
	return w
}

// one makes one write, retrying until it is answered; false when the
// workload stopped first (its outcome stays unknown).
func (w *recordsWorkload) one(t *testing.T, cl *client.Client, rng *rand.Rand, wid, coll string) bool {
	rw := &recordWrite{collection: coll, puts: map[string]string{}, deletes: map[string]bool{}}
	var ops []*syncv1.RecordOp
	var opts client.WriteOptions
	key := func() string { return fmt.Sprint("k", rng.IntN(8)) }
	switch r := rng.IntN(10); {
	case r < 5: // puts of 1..3 keys
		for range 1 + rng.IntN(3) {
			k := key()
			if _, dup := rw.puts[k]; !dup {
				rw.puts[k] = wid + "/" + k
				ops = append(ops, client.Put(k, []byte(rw.puts[k])))
			}
		}
	case r < 7:
		k := key()
		rw.deletes[k] = true
		ops = append(ops, client.Delete(k))
	default: // read a record's version, then write only if it is unchanged
		k := key()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := cl.Get(ctx, coll, []string{k}, "", 0, client.Linearizable)
		cancel()
		if err != nil {
			w.errors.Add(1)
			return true // try another write
		}
		var v uint64
		if len(got.GetRecords()) == 1 {
			v = got.GetRecords()[0].GetVersion()
		}
		opts.Conditions = []*syncv1.RecordCondition{client.IfVersion(k, v)}
		rw.puts[k] = wid + "/" + k
		ops = append(ops, client.Put(k, []byte(rw.puts[k])))
	}
	opts.IdempotencyKey = wid
	w.mu.Lock()
	w.writes[wid] = rw
	w.mu.Unlock()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := cl.Write(ctx, coll, ops, opts)
		cancel()
		switch {
		case err == nil:
			w.mu.Lock()
			rw.version = resp.GetVersion()
			w.mu.Unlock()
			w.acked.Add(1)
			return true
		case status.Code(err) == codes.FailedPrecondition:
			w.mu.Lock()
			rw.refused = true
			w.mu.Unlock()
			return true
		case status.Code(err) == codes.InvalidArgument:
			t.Errorf("write %s refused as invalid: %v", wid, err)
			return false
		}
		w.errors.Add(1)
		select {
		case <-w.stop:
			return false
		default:
		}
	}
}

func (w *recordsWorkload) finish() { close(w.stop); w.wg.Wait() }

func (w *recordsWorkload) progress(t *testing.T, n int64) {
	t.Helper()
	target := w.acked.Load() + n
	deadline := time.Now().Add(60 * time.Second)
	for w.acked.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the records workload made no progress: %d acknowledged, waiting for %d", w.acked.Load(), target)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, not synchronising
	}
}

// device is a client that keeps collections in step by Sync, as an app
// would: it holds each collection's records and version.
type device struct {
	cl      *client.Client
	state   map[string]map[string]*syncv1.Record
	version map[string]uint64
	resets  int
}

func newDevice(cl *client.Client) *device {
	return &device{cl: cl, state: map[string]map[string]*syncv1.Record{}, version: map[string]uint64{}}
}

// catchUp syncs one collection to the head (reading it whole after a
// RESET) and returns the digest the server reported.
func (d *device) catchUp(ctx context.Context, coll string) (string, error) {
	if d.state[coll] == nil {
		d.state[coll] = map[string]*syncv1.Record{}
	}
	for {
		resp, err := d.cl.SyncRecords(ctx, coll, d.version[coll], 7, client.Linearizable)
		if err != nil {
			return "", err
		}
		switch resp.GetStatus() {
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_RESET:
			d.resets++
			if err := d.readWhole(ctx, coll); err != nil {
				return "", err
			}
			continue
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_AHEAD:
			return "", fmt.Errorf("%s: the server says %d is ahead of it", coll, d.version[coll])
		}
		for _, r := range resp.GetChanges() {
			if r.GetDeleted() {
				delete(d.state[coll], r.GetKey())
			} else {
				d.state[coll][r.GetKey()] = r
			}
		}
		d.version[coll] = resp.GetVersion()
		if resp.GetStatus() != syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_MORE {
			return resp.GetDigest(), nil
		}
	}
}

// readWhole replaces what the device holds by a paged full read; the sync
// that follows starts from the version of its first page.
func (d *device) readWhole(ctx context.Context, coll string) error {
	st := map[string]*syncv1.Record{}
	after := ""
	for first := true; ; first = false {
		page, err := d.cl.Get(ctx, coll, nil, after, 3, client.Linearizable)
		if err != nil {
			return err
		}
		if first {
			d.version[coll] = page.GetVersion()
		}
		for _, r := range page.GetRecords() {
			st[r.GetKey()] = r
		}
		if !page.GetMore() {
			d.state[coll] = st
			return nil
		}
		after = page.GetNextAfterKey()
	}
}

func digestOf(recs map[string]*syncv1.Record) string {
	d := make([]byte, 32)
	for k, r := range recs {
		h := fsm.RecordHash(k, r.GetVersion(), r.GetValue())
		for i := range d {
			d[i] ^= h[i]
		}
	}
	return hex.EncodeToString(d)
}

// TestRecordsSurviveLeaderKill: 1,000 collections over every group, 16
// writers (puts, deletes, conditional writes), the node leading the most
// groups killed and brought back. Then, on every replica: each
// collection's records are what its acknowledged writes left, in version
// order (allowing only unanswered writes to have applied on top), no
// version is used by two acknowledged writes, and devices that synced from
// their own earlier versions all along (reading whole after a RESET, as
// tombstones are compacted) converge to the final state and its digest.
func TestRecordsSurviveLeaderKill(t *testing.T) {
	const collections, writers, devices = 1000, 16, 3
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 4
		cfg.SnapshotThreshold = 256
		cfg.TrailingLogs = 128
		cfg.SnapshotInterval = 200 * time.Millisecond
		cfg.TombstoneCompactEvery = 100 * time.Millisecond
		cfg.TombstoneMaxAge = 0
		cfg.TombstoneKeep = 1 // compact hard so devices meet RESET
	})
	c.WaitPlaced(30 * time.Second)
	cl := c.Client()
	names := numbered("members/g%04d", collections)
	w := startRecordsWorkload(t, cl, writers, names)

	// Devices follow a few collections each while the cluster fails over.
	devs := make([]*device, devices)
	followed := make([][]string, devices)
	var dwg sync.WaitGroup
	stopDevices := make(chan struct{})
	for i := range devs {
		devs[i] = newDevice(cl)
		for j := range 20 {
			followed[i] = append(followed[i], names[(i*20+j)%hotCollections])
		}
		dwg.Go(func() {
			for {
				select {
				case <-stopDevices:
					return
				default:
				}
				for _, coll := range followed[i] {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, _ = devs[i].catchUp(ctx, coll) // failovers fail some syncs; the next one goes on
					cancel()
				}
			}
		})
	}
	w.progress(t, 300)
	busiest, most := 0, -1
	counts := map[int]int{}
	for _, m := range c.GroupLeaders() {
		counts[m]++
	}
	for m, n := range counts {
		if n > most {
			busiest, most = m, n
		}
	}
	t.Logf("killing %s, which leads %d groups", c.Members[busiest].ID, most)
	c.Kill(busiest)
	w.progress(t, 300)
	c.Restart(busiest)
	w.progress(t, 300)
	w.finish()
	close(stopDevices)
	dwg.Wait()
	c.WaitConverged(30 * time.Second)
	t.Logf("%d writes acknowledged, %d errors retried", w.acked.Load(), w.errors.Load())
	if w.errors.Load() == 0 {
		t.Error("writers saw no error: the failover was not exercised")
	}

	checkRecords(t, c, names, w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resets := 0
	for i, d := range devs {
		for _, coll := range followed[i] {
			digest, err := d.catchUp(ctx, coll)
			if err != nil {
				t.Fatal(err)
			}
			whole := newDevice(cl)
			if err := whole.readWhole(ctx, coll); err != nil {
				t.Fatal(err)
			}
			if got, want := digestOf(d.state[coll]), digestOf(whole.state[coll]); got != want || got != digest {
				t.Fatalf("device %d holds %s with digest %s; the collection's is %s (server says %s)", i, coll, got, want, digest)
			}
		}
		resets += d.resets
	}
	t.Logf("devices read whole after %d RESETs", resets)
	if resets == 0 {
		t.Error("no device met a RESET: compaction was not exercised")
	}
}

// checkRecords reads every collection on every replica and checks it
// against the writes: for each key, the newest acknowledged write that
// touched it is what the record holds, unless an unanswered write touched
// it later; no version is claimed by two acknowledged writes.
func checkRecords(t *testing.T, c *testcluster.Cluster, collections []string, w *recordsWorkload) {
	t.Helper()
	type keyed struct{ coll, key string }
	lastAcked := map[keyed]*recordWrite{}
	byVersion := map[string]map[uint64]string{}
	unanswered := map[string]int{}
	for wid, rw := range w.writes {
		if rw.version == 0 {
			if !rw.refused {
				unanswered[rw.collection]++
			}
			continue
		}
		if byVersion[rw.collection] == nil {
			byVersion[rw.collection] = map[uint64]string{}
		}
		if other, dup := byVersion[rw.collection][rw.version]; dup {
			t.Fatalf("%s version %d was given to writes %s and %s", rw.collection, rw.version, other, wid)
		}
		byVersion[rw.collection][rw.version] = wid
		for k := range keysOf(rw) {
			if prev := lastAcked[keyed{rw.collection, k}]; prev == nil || prev.version < rw.version {
				lastAcked[keyed{rw.collection, k}] = rw
			}
		}
	}
	ctx := context.Background()
	for _, m := range c.Members {
		if m.Node == nil {
			continue
		}
		smap := m.Node.ShardMap()
		for _, coll := range collections {
			if m.Node.Group(smap.GroupFor(coll)) == nil {
				continue
			}
			final, head, err := readCollection(ctx, m.Node, coll)
			if err != nil {
				t.Fatalf("%s: %v", m.ID, err)
			}
			for v := range byVersion[coll] {
				if v > head {
					t.Fatalf("%s: %s is at version %d, below acknowledged version %d", m.ID, coll, head, v)
				}
			}
			// Gap-free: every version up to the head was given to one write,
			// acknowledged or not answered.
			if missing := int(head) - len(byVersion[coll]); missing > unanswered[coll] {
				t.Fatalf("%s: %s is at version %d with %d acknowledged writes and %d unanswered: versions were skipped", m.ID, coll, head, len(byVersion[coll]), unanswered[coll])
			}
			for k := 0; k < 8; k++ {
				key := fmt.Sprint("k", k)
				a := lastAcked[keyed{coll, key}]
				rec, ok := final[key]
				switch {
				case a == nil && !ok:
				case ok && (a == nil || rec.Version > a.version):
					// Written by a write with no acknowledgement: it must be one.
					if wid, acked := byVersion[coll][rec.Version]; acked {
						t.Fatalf("%s: %s/%s at version %d, which acknowledged write %s has, but it does not touch the key", m.ID, coll, key, rec.Version, wid)
					}
					if !rec.Deleted {
						wid, _, _ := strings.Cut(string(rec.Value), "/")
						if uw := w.writes[wid]; uw == nil || uw.version != 0 || uw.refused || uw.puts[key] != string(rec.Value) {
							t.Fatalf("%s: %s/%s holds %q at version %d, which no unanswered write sent", m.ID, coll, key, rec.Value, rec.Version)
						}
					}
				case !ok:
					// Absent: the tombstone was compacted or never listed;
					// only a delete can explain it.
					if !a.deletes[key] {
						t.Fatalf("%s: %s/%s is missing; acknowledged write at version %d put it", m.ID, coll, key, a.version)
					}
				case rec.Version < a.version:
					t.Fatalf("%s: %s/%s at version %d; acknowledged write at %d is lost", m.ID, coll, key, rec.Version, a.version)
				case a.deletes[key] != rec.Deleted || (!rec.Deleted && string(rec.Value) != a.puts[key]):
					t.Fatalf("%s: %s/%s at version %d holds %q (deleted %v), not what the acknowledged write did", m.ID, coll, key, rec.Version, rec.Value, rec.Deleted)
				}
			}
		}
	}
}

func keysOf(rw *recordWrite) map[string]bool {
	out := map[string]bool{}
	for k := range rw.puts {
		out[k] = true
	}
	for k := range rw.deletes {
		out[k] = true
	}
	return out
}

// readCollection reads a collection's records and the tombstones still
// kept on one replica.
func readCollection(ctx context.Context, n *node.Node, coll string) (map[string]fsm.Record, uint64, error) {
	out := map[string]fsm.Record{}
	var head uint64
	for _, since := range []uint64{0, 1} { // from 0: live records; from 1: tombstones too
		for {
			page, err := n.SyncRecords(ctx, coll, since, 1000, node.Stale)
			if err != nil {
				return nil, 0, fmt.Errorf("sync %s: %w", coll, err)
			}
			if page.Status == fsm.SyncReset || page.Status == fsm.SyncAhead {
				break // below the horizon: the live records from 0 stand
			}
			head = page.Version
			for _, r := range page.Changes {
				out[r.Key] = r
			}
			if page.Status != fsm.SyncMore {
				break
			}
			since = page.PageVersion
		}
	}
	if head == 0 {
		res, err := n.GetRecords(ctx, coll, nil, "", 1, node.Stale)
		if err != nil {
			return nil, 0, fmt.Errorf("get %s: %w", coll, err)
		}
		head = res.Version
	}
	return out, head, nil
}

// TestSyncManyAndConditionsOverGRPC: one SyncMany to one node answers
// collections of every group (served there or forwarded to their
// leaders), each as a Sync of its own would; a failed condition comes back
// FAILED_PRECONDITION with the current versions as a detail.
func TestSyncManyAndConditionsOverGRPC(t *testing.T) {
	c := testcluster.New(t, 3, func(cfg *node.Config) { cfg.Shards = 4 })
	c.WaitPlaced(30 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reqs []*syncv1.RecordSyncRequest
	groups := map[uint64]bool{}
	smap := c.Members[0].Node.ShardMap()
	for i := range 40 {
		coll := fmt.Sprintf("members/g%d", i)
		for v := range i % 3 {
			if _, err := cl.Write(ctx, coll, []*syncv1.RecordOp{client.Put(fmt.Sprint("u", v), []byte("x"))}, client.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		groups[uint64(smap.GroupFor(coll))] = true
		reqs = append(reqs, &syncv1.RecordSyncRequest{Collection: proto.String(coll), SinceVersion: proto.Uint64(0), Limit: proto.Uint32(10)})
	}
	if len(groups) < 4 {
		t.Fatalf("the collections cover %d groups, want all 4", len(groups))
	}
	reqs = append(reqs, &syncv1.RecordSyncRequest{Collection: proto.String(""), Limit: proto.Uint32(10)})
	// A collection whose group is changing leader (placement evens leaders
	// after the cluster forms) is answered UNAVAILABLE, which a caller
	// retries: so does the test, until every answer is final.
	raw := syncv1.NewRecordsClient(dialRaw(t, c.Members[0].GRPCAddr))
	var resp *syncv1.SyncManyResponse
	testutil.Eventually(t, 20*time.Second, func() error {
		var err error
		if resp, err = raw.SyncMany(ctx, &syncv1.SyncManyRequest{Collections: reqs}); err != nil {
			return err
		}
		for _, r := range resp.GetResults() {
			if codes.Code(r.GetErrorCode()) == codes.Unavailable {
				return fmt.Errorf("%s: %s", r.GetCollection(), r.GetErrorMessage())
			}
		}
		return nil
	})
	if len(resp.GetResults()) != len(reqs) {
		t.Fatalf("%d results for %d collections", len(resp.GetResults()), len(reqs))
	}
	for i, r := range resp.GetResults()[:40] {
		one, err := cl.SyncRecords(ctx, reqs[i].GetCollection(), 0, 10, client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetErrorCode() != 0 || r.GetSync().GetVersion() != uint64(i%3) || r.GetSync().GetDigest() != one.GetDigest() || len(r.GetSync().GetChanges()) != i%3 {
			t.Fatalf("%s: SyncMany answered %v; Sync answers version %d digest %s", reqs[i].GetCollection(), r, one.GetVersion(), one.GetDigest())
		}
	}
	if last := resp.GetResults()[40]; codes.Code(last.GetErrorCode()) != codes.InvalidArgument || !strings.Contains(last.GetErrorMessage(), "collection id is empty") {
		t.Fatalf("the bad collection got %v", last)
	}

	_, err := cl.Write(ctx, "members/g2", []*syncv1.RecordOp{client.Put("u0", []byte("y"))}, client.WriteOptions{Conditions: []*syncv1.RecordCondition{client.IfVersion("u0", 7)}})
	st := status.Convert(err)
	var detail *syncv1.ConditionFailed
	for _, d := range st.Details() {
		if cf, ok := d.(*syncv1.ConditionFailed); ok {
			detail = cf
		}
	}
	if st.Code() != codes.FailedPrecondition || detail == nil || detail.GetVersion() != 2 || len(detail.GetRecords()) != 1 || detail.GetRecords()[0].GetVersion() != 1 {
		t.Fatalf("a failed condition answered %v %q, detail %v", st.Code(), st.Message(), detail)
	}
}

// TestProfileCopiesReachEveryMemberListOnce: profile writes copied into 200
// member lists spread over every group, the source group's leader killed
// while the copies are under way. Every list ends with the last profile
// version, and each list's version equals the number of profile writes:
// every copy applied exactly once, none lost, none twice.
func TestProfileCopiesReachEveryMemberListOnce(t *testing.T) {
	const lists, writes = 200, 12
	c := testcluster.New(t, 3, func(cfg *node.Config) { cfg.Shards = 4 })
	c.WaitPlaced(30 * time.Second)
	cl := c.Client()
	var targets []string
	groups := map[uint64]bool{}
	smap := c.Members[0].Node.ShardMap()
	for i := range lists {
		targets = append(targets, fmt.Sprintf("members/g%03d", i))
		groups[uint64(smap.GroupFor(targets[i]))] = true
	}
	if len(groups) != 4 {
		t.Fatalf("the lists cover %d groups, want 4", len(groups))
	}
	source := "profile/alice"
	write := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := cl.Write(ctx, source, []*syncv1.RecordOp{client.Put("name", []byte(fmt.Sprint("alice-", i)))},
			client.WriteOptions{IdempotencyKey: fmt.Sprint("profile-", i), Copies: []*syncv1.RecordCopy{client.CopyTo("name", "alice", targets...)}})
		if err != nil {
			t.Fatalf("profile write %d: %v", i, err)
		}
	}
	for i := range writes / 2 {
		write(i)
	}
	leader := c.WaitGroupLeader(smap.GroupFor(source), 10*time.Second)
	jobs, _ := c.Members[leader].Node.Group(smap.GroupFor(source)).PendingCopies(1000)
	t.Logf("killing %s, the leader of %s's group, with %d copy jobs pending", c.Members[leader].ID, source, jobs)
	c.Kill(leader)
	for i := writes / 2; i < writes; i++ {
		write(i)
	}
	c.Restart(leader)

	want := fmt.Sprint("alice-", writes-1)
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, m := range c.Members {
			for _, g := range m.Node.Groups() {
				if pending, err := g.PendingCopies(1); err != nil || (pending > 0 && g.IsLeader()) {
					return fmt.Errorf("group %d still has copies to make (%v)", g.ID(), err)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, tgt := range targets {
			got, err := cl.Get(ctx, tgt, []string{"alice"}, "", 0, client.Linearizable)
			if err != nil {
				return err
			}
			if len(got.GetRecords()) != 1 || string(got.GetRecords()[0].GetValue()) != want {
				return fmt.Errorf("%s holds %v, want %s", tgt, got.GetRecords(), want)
			}
			if got.GetVersion() != writes {
				return fmt.Errorf("%s is at version %d after %d profile writes: a copy was lost or made twice", tgt, got.GetVersion(), writes)
			}
		}
		return nil
	})
}

// TestWatchCollectionConvergesAcrossFailover: a watcher follows a
// collection (Subscribe, then Sync whenever the stream cannot go on) while
// it is written, its group's leader is killed and its tombstones are
// compacted hard. Every update it gets starts at the version it holds, and
// it ends at the final version with the final records and digest.
func TestWatchCollectionConvergesAcrossFailover(t *testing.T) {
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 2
		cfg.TombstoneCompactEvery = 50 * time.Millisecond
		cfg.TombstoneMaxAge = 0
		cfg.TombstoneKeep = 1
	})
	c.WaitPlaced(30 * time.Second)
	cl := c.Client()
	const coll = "friends/alice"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	held := map[string]*syncv1.Record{}
	var version uint64
	var updates, replaces int
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- cl.WatchCollection(ctx, coll, 0, func(u client.CollectionUpdate) error {
			mu.Lock()
			defer mu.Unlock()
			if u.Replace {
				held, replaces = map[string]*syncv1.Record{}, replaces+1
			} else if u.FromVersion != version {
				return fmt.Errorf("an update from %d while holding %d", u.FromVersion, version)
			}
			for _, r := range u.Changes {
				if r.GetDeleted() {
					delete(held, r.GetKey())
				} else {
					held[r.GetKey()] = r
				}
			}
			version, updates = u.Version, updates+1
			return nil
		})
	}()

	rng := rand.New(rand.NewPCG(3, 4))
	write := func(i int) {
		op := client.Put(fmt.Sprint("k", rng.IntN(10)), []byte(fmt.Sprint(i)))
		if rng.IntN(3) == 0 {
			op = client.Delete(op.GetKey())
		}
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		if _, err := cl.Write(wctx, coll, []*syncv1.RecordOp{op}, client.WriteOptions{IdempotencyKey: fmt.Sprint("w", i)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i := range 150 {
		write(i)
	}
	leader := c.WaitGroupLeader(c.Members[0].Node.ShardMap().GroupFor(coll), 10*time.Second)
	c.Kill(leader)
	for i := 150; i < 300; i++ {
		write(i)
	}
	c.Restart(leader)

	testutil.Eventually(t, 30*time.Second, func() error {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		final, err := cl.Get(rctx, coll, nil, "", 1000, client.Linearizable)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if version != final.GetVersion() || digestOf(held) != final.GetDigest() {
			return fmt.Errorf("the watcher holds version %d (digest %s); the collection is at %d (%s)", version, digestOf(held), final.GetVersion(), final.GetDigest())
		}
		return nil
	})
	cancel()
	if err := <-watchErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the watch ended with %v", err)
	}
	t.Logf("%d updates, %d full reads", updates, replaces)
}
