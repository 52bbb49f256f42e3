package fsm

import (
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func setVersionCmd(version, expected uint32, now int64) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_SetClusterVersion{SetClusterVersion: &fsmpb.SetClusterVersion{Version: version, Expected: expected}}}
}

func probeCmd(key string) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_UpgradeProbe{UpgradeProbe: &fsmpb.UpgradeProbe{Key: key, Note: "n"}}}
}

// withProbe makes this test binary a test build (one more cluster version,
// UpgradeProbe) for the length of the test, whatever its tags.
func withProbe(t *testing.T) {
	if HasUpgradeProbe() {
		return // a tagged test binary
	}
	undo := registerUpgradeProbe()
	if SupportedClusterVersion() != probeVersion {
		t.Fatal("registering the probe did not raise the supported version")
	}
	t.Cleanup(undo)
}

func TestSetClusterVersionOnlyRaisesFromTheStoredVersion(t *testing.T) {
	h := newHarness(t)
	if cv, err := h.f.ClusterVersion(); err != nil || cv != (ClusterVersion{Version: BaseClusterVersion}) {
		t.Fatalf("a new state runs at %+v, %v; want the base version, never set", cv, err)
	}
	steps := []struct {
		name    string
		cmd     *fsmpb.Command
		wantErr error
		want    ClusterVersion
	}{
		{"expects a stored version where none is", setVersionCmd(2, 1, 10), ErrClusterVersionConflict, ClusterVersion{1, 0, false}},
		{"no raise from the base", setVersionCmd(1, 0, 10), ErrClusterVersionConflict, ClusterVersion{1, 0, false}},
		{"the first version (a bootstrap or a first finalize)", setVersionCmd(2, 0, 10), nil, ClusterVersion{2, 10, true}},
		{"stale expectation", setVersionCmd(3, 0, 20), ErrClusterVersionConflict, ClusterVersion{2, 10, true}},
		{"the same version again", setVersionCmd(2, 2, 20), ErrClusterVersionConflict, ClusterVersion{2, 10, true}},
		{"lower", setVersionCmd(1, 2, 20), ErrClusterVersionConflict, ClusterVersion{2, 10, true}},
		// Above what this binary supports: stored all the same (replicas
		// stay identical); the node stops a binary that cannot follow.
		{"raised past this binary", setVersionCmd(9, 2, 30), nil, ClusterVersion{9, 30, true}},
	}
	for _, s := range steps {
		before := h.digest()
		r := h.apply(s.cmd)[0]
		if !errors.Is(r.Err, s.wantErr) || (s.wantErr == nil && r.Err != nil) {
			t.Fatalf("%s: got %v, want %v", s.name, r.Err, s.wantErr)
		}
		if s.wantErr != nil && h.digest() != before {
			t.Fatalf("%s: a refused command changed the state", s.name)
		}
		if cv, err := h.f.ClusterVersion(); err != nil || cv != s.want {
			t.Fatalf("%s: stored %+v, %v; want %+v", s.name, cv, err, s.want)
		}
	}
	if h.replayInBatches(2) != h.digest() {
		t.Fatal("a replay in other batches stores another state")
	}
	st, err := h.eng.State(testGroup)
	if err != nil {
		t.Fatal(err)
	}
	if cv, err := ReadClusterVersion(st); err != nil || cv.Version != 9 {
		t.Fatalf("ReadClusterVersion = %+v, %v", cv, err)
	}
}

// The gate: a command of a version above the group's is refused, the same
// way in every batch shape and changing nothing, and applies once the
// group is raised to it.
func TestCommandAboveTheGroupsVersionIsRefused(t *testing.T) {
	withProbe(t)
	h := newHarness(t)
	h.apply(setVersionCmd(releaseClusterVersion, 0, 1))
	rs := h.apply(probeCmd("a"), appendCmd("tl", "x", "", 2), probeCmd("b"))
	for _, i := range []int{0, 2} {
		if !errors.Is(rs[i].Err, ErrClusterVersion) {
			t.Fatalf("a probe at version %d: %v, want ErrClusterVersion", releaseClusterVersion, rs[i].Err)
		}
	}
	if rs[1].Err != nil || rs[1].Append.Seq != 1 {
		t.Fatalf("the append between refused probes: %+v", rs[1])
	}
	// The probes changed nothing: the state is the append's alone.
	h2 := newHarness(t)
	h2.apply(setVersionCmd(releaseClusterVersion, 0, 1), appendCmd("tl", "x", "", 2))
	if h.digest() != h2.digest() {
		t.Fatal("refused probes changed the state")
	}
	if h.replayInBatches(1) != h.digest() || h.replayInBatches(4) != h.digest() {
		t.Fatal("the gate decided differently in another batch shape")
	}

	h.apply(setVersionCmd(probeVersion, releaseClusterVersion, 3))
	r := h.apply(probeCmd("d"))[0]
	if r.Err != nil || r.Probes != 1 {
		t.Fatalf("a probe at version %d: %+v", probeVersion, r)
	}
	if r := h.apply(probeCmd(""))[0]; !errors.Is(r.Err, ErrInvalidArgument) {
		t.Fatalf("a probe without a key: %v", r.Err)
	}
	if h.replayInBatches(3) != h.digest() {
		t.Fatal("a replay in other batches stores another state")
	}
}

// A binary that does not apply UpgradeProbe (a release binary) stops on
// one that a group allows, rather than skip it and diverge, and panics
// nowhere else: that is what the gate keeps from happening.
func TestReleaseBinaryStopsOnAProbeItCannotApply(t *testing.T) {
	if HasUpgradeProbe() {
		t.Skip("a test build applies the probe")
	}
	h := newHarness(t)
	h.apply(setVersionCmd(probeVersion, 0, 1))
	st, err := h.eng.State(testGroup)
	if err != nil {
		t.Fatal(err)
	}
	data, err := EncodeCommand(probeCmd("a"))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(root *bolt.Bucket) error {
		_, err := applyBatch(root, []*raft.Log{{Index: 100, Term: 1, Type: raft.LogCommand, Data: data}})
		return err
	})
	if !errors.Is(err, ErrNeedsUpgrade) {
		t.Fatalf("a release binary applying a probe: %v, want ErrNeedsUpgrade", err)
	}
}

func TestCommandVersion(t *testing.T) {
	withProbe(t)
	cases := []struct {
		cmd  *fsmpb.Command
		want uint32
	}{
		{appendCmd("t", "x", "", 1), BaseClusterVersion},
		{setVersionCmd(3, 2, 1), BaseClusterVersion},
		{&fsmpb.Command{}, BaseClusterVersion},
		{probeCmd("k"), probeVersion},
	}
	for _, c := range cases {
		if got := CommandVersion(c.cmd); got != c.want {
			t.Errorf("%s: version %d, want %d", CommandName(c.cmd), got, c.want)
		}
	}
}

// The version is replicated state: a snapshot carries it.
func TestClusterVersionTravelsInSnapshots(t *testing.T) {
	src := newHarness(t)
	src.apply(setVersionCmd(2, 0, 5))
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := newHarness(t)
	if err := dst.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if cv, err := dst.f.ClusterVersion(); err != nil || cv != (ClusterVersion{2, 5, true}) {
		t.Fatalf("restored %+v, %v", cv, err)
	}
}
