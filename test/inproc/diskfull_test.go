package inproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/client"
)

// mountTmpfs mounts a tmpfs of size bytes at a new directory, unmounted at
// the end of the test; it skips the test where mounting is not allowed.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// TestDiskFull fills a node's small data disk: writes are refused with
// RESOURCE_EXHAUSTED before it runs out while reads go on, the node never
// stops, writes resume once space is freed, and every acknowledged write is
// there after a restart.
func TestDiskFull(t *testing.T) {
	const (
		disk    = 40 << 20
		reserve = 8 << 20
		ballast = 12 << 20
		payload = 32 << 10
	)
	mnt := mountTmpfs(t, disk)
	// The space an operator frees later.
	if err := os.WriteFile(filepath.Join(mnt, "ballast"), make([]byte, ballast), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, func(cfg *node.Config) {
		cfg.DataDir = filepath.Join(mnt, cfg.NodeID)
		cfg.Shards = 1
		cfg.DiskReserveBytes = reserve
		cfg.WALSegmentBytes = 1 << 20
		cfg.StateMmapBytes = 64 << 20
		cfg.SnapshotThreshold = 1 << 20 // no snapshot: the test is about the log and the state
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type ack struct {
		seq     uint64
		payload []byte
	}
	var acked []ack
	appendOne := func(i int) error {
		p := bytes.Repeat([]byte{byte(i)}, payload)
		resp, err := cl.Append(ctx, "tl", p, client.AppendOptions{IdempotencyKey: fmt.Sprint("k", i)})
		if err == nil {
			acked = append(acked, ack{resp.GetSeq(), p})
		}
		return err
	}
	i := 0
	var refusal error
	for ; i < (disk/payload)*2; i++ {
		if err := appendOne(i); err != nil {
			refusal = err
			break
		}
	}
	if status.Code(refusal) != codes.ResourceExhausted {
		t.Fatalf("after %d appends: %v, want RESOURCE_EXHAUSTED", i, refusal)
	}
	t.Logf("%d appends of %d KiB acknowledged, then: %v", len(acked), payload>>10, refusal)
	m := c.Members[0]
	st, err := m.Node.Status()
	if err != nil || !st.Storage.Low {
		t.Fatalf("status while full: %+v, %v", st.Storage, err)
	}
	// Reads go on.
	if resp, err := cl.Pull(ctx, "tl", 0, 10, client.Linearizable); err != nil || len(resp.GetEntries()) != 10 {
		t.Fatalf("pull while full: %d entries, %v", len(resp.GetEntries()), err)
	}
	// Still refused a while later: the node is up and says why.
	if err := appendOne(i); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("append while full: %v", err)
	}
	if m.Node == nil || !m.Node.IsLeader() {
		t.Fatal("the node stopped leading while full")
	}

	if err := os.Remove(filepath.Join(mnt, "ballast")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		err := appendOne(i)
		if err != nil && status.Code(err) != codes.ResourceExhausted {
			return errors.Join(errors.New("unexpected"), err)
		}
		return err
	})
	t.Logf("writes resumed once %d MiB were freed", ballast>>20)

	c.Stop(0)
	c.Restart(0)
	c.WaitGroupLeader(1, 10*time.Second)
	var got []ack
	var after uint64
	for {
		resp, err := cl.Pull(ctx, "tl", after, 100, client.Linearizable)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			got = append(got, ack{e.GetSeq(), e.GetPayload()})
			after = e.GetSeq()
		}
		if len(resp.GetEntries()) == 0 {
			break
		}
	}
	if len(got) != len(acked) {
		t.Fatalf("%d entries after the restart, %d acknowledged", len(got), len(acked))
	}
	for j, a := range acked {
		if got[j].seq != a.seq || !bytes.Equal(got[j].payload, a.payload) {
			t.Fatalf("acknowledged append %d (seq %d) is missing or changed", j, a.seq)
		}
	}
}
