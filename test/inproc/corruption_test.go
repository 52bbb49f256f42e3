package inproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/storage"
)

// TestDamagedPayloadIsNeverServed changes bytes inside one stored payload in
// a stopped follower's state file (as a failing disk would), restarts it
// and makes it the group's leader. It never serves the altered payload: the
// read that meets it fails, the replica is fenced and hands leadership
// away, its leader takes it out and adds it back empty, and it ends with a
// state digest equal to its peers', every acknowledged append intact.
func TestDamagedPayloadIsNeverServed(t *testing.T) {
	c := testcluster.New(t, 3, func(cfg *node.Config) { cfg.Shards = 1 })
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	payload := func(i int) []byte { return []byte(fmt.Sprintf("MARK-%03d-%s", i, strings.Repeat("p", 40))) }
	var acked []uint64
	appendN := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			resp, err := cl.Append(ctx, "victim", payload(i), client.AppendOptions{IdempotencyKey: fmt.Sprint("v", i)})
			if err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
			acked = append(acked, resp.GetSeq())
		}
	}
	appendN(0, 20)

	f := follower(t, c)
	fm := c.Members[f]
	c.Stop(f)
	damaged := damageEveryCopy(t, statePath(fm), []byte("MARK-007"), []byte("NARK-007"))
	t.Logf("changed %d copies of payload 7 in %s's state", damaged, fm.ID)
	c.Restart(f)
	c.WaitGroupLeader(1, 10*time.Second)

	// Hand the group to the damaged replica.
	testutil.Eventually(t, 20*time.Second, func() error {
		g := fm.Node.Group(1)
		if g != nil && g.IsLeader() {
			return nil
		}
		leader := c.WaitGroupLeader(1, 10*time.Second)
		if err := c.Members[leader].Node.Group(1).TransferLeadership(ctx, fm.ID); err != nil {
			return err
		}
		return fmt.Errorf("%s does not lead yet", fm.ID)
	})
	sawDamage := false
	testutil.Eventually(t, 20*time.Second, func() error {
		res, err := fm.Node.Pull(ctx, "victim", 0, 100, node.Linearizable)
		for _, e := range res.Entries {
			if bytes.Contains(e.Payload, []byte("NARK")) {
				t.Fatalf("%s served the damaged payload of seq %d", fm.ID, e.Seq)
			}
		}
		sawDamage = sawDamage || errors.Is(err, fsm.ErrCorruptState)
		if g := fm.Node.Group(1); g != nil && g.Fenced() != "" || sawDamage {
			return nil
		}
		return fmt.Errorf("not fenced yet (read: %d entries, %v)", len(res.Entries), err)
	})
	t.Logf("%s met the damage on a read (%v) and fenced the replica", fm.ID, sawDamage)

	appendN(20, 30) // writes go on through the rebuild
	c.WaitConverged(60 * time.Second)
	testutil.Eventually(t, 30*time.Second, func() error {
		g := fm.Node.Group(1)
		if g == nil || g.Fenced() != "" {
			return errors.New("still fenced")
		}
		res, err := fm.Node.Pull(ctx, "victim", 0, 100, node.Stale)
		if err != nil {
			return err
		}
		if len(res.Entries) != len(acked) {
			return fmt.Errorf("%d entries, %d acknowledged", len(res.Entries), len(acked))
		}
		for i, e := range res.Entries {
			if e.Seq != acked[i] || !bytes.Equal(e.Payload, payload(i)) {
				return fmt.Errorf("seq %d holds %q", e.Seq, e.Payload)
			}
		}
		return nil
	})
}

// damageEveryCopy replaces every occurrence of old by new (same length) in
// a file, and says how many it changed.
func damageEveryCopy(t *testing.T, path string, old, new []byte) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := bytes.Count(b, old)
	if n == 0 {
		t.Fatalf("%q not found in %s", old, path)
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(b, old, new), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDivergedReplicaIsFencedByTheDigestCheck removes a key from a stopped
// follower's state (checksums cannot see a value that is simply gone): the
// group leader's digest check finds the replica differing from the
// majority at the same log index, fences it, and it is rebuilt to the
// majority's state.
func TestDivergedReplicaIsFencedByTheDigestCheck(t *testing.T) {
	c := testcluster.New(t, 3, func(cfg *node.Config) {
		cfg.Shards = 1
		cfg.DigestCheckInterval = 300 * time.Millisecond
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 20 {
		if _, err := cl.Append(ctx, "victim", []byte(fmt.Sprint("entry ", i)), client.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitConverged(30 * time.Second)
	f := follower(t, c)
	fm := c.Members[f]
	c.Stop(f)
	eng, err := storage.Open(storage.Options{Dir: filepath.Join(fm.Dir, "storage"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := eng.State(1)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(root *bolt.Bucket) error {
		c := root.Bucket([]byte("timelines")).Cursor()
		k, _ := c.Last()
		if k == nil {
			return errors.New("no timeline keys")
		}
		return c.Delete()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	c.Restart(f)
	fenced := false
	testutil.Eventually(t, 60*time.Second, func() error {
		g := fm.Node.Group(1)
		fenced = fenced || g == nil || g.Fenced() != ""
		if !fenced {
			return errors.New("not fenced yet")
		}
		return nil
	})
	c.WaitConverged(60 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() error {
		res, err := fm.Node.Pull(ctx, "victim", 0, 100, node.Stale)
		if err != nil || len(res.Entries) != 20 {
			return fmt.Errorf("after the rebuild %s holds %d entries (%v), want 20", fm.ID, len(res.Entries), err)
		}
		return nil
	})
}
