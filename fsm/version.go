package fsm

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/storage"
)

// Cluster versions gate the commands a cluster of mixed binaries may log.
// Every command kind belongs to a cluster version (the base version unless
// commandVersions says otherwise); each group stores the version it runs
// at, and refuses, deterministically and changing nothing, a command of a
// higher one. The meta group's version is the cluster's active version;
// the data groups get it from their leaders. The node checks the same
// before it proposes, so a refusal here only meets a proposer that skipped
// that check.
//
// Version 1 is a cluster made before cluster versions (nothing stored).
// Version 2 adds SetClusterVersion in data groups and the version checks
// at start and at join; a cluster bootstrapped by a binary of version 2 starts
// there. A test build (tag syncstore_upgrade_test) supports version 3, which
// adds UpgradeProbe.
const (
	// BaseClusterVersion is the version of a cluster made before cluster
	// versions, and of every command kind not in commandVersions.
	BaseClusterVersion uint32 = 1
	// releaseClusterVersion is the newest version this release supports.
	releaseClusterVersion uint32 = 2
)

// supportedVersion is the newest cluster version this binary applies
// commands of; a test build raises it (version_upgradetest.go).
var supportedVersion = releaseClusterVersion

// SupportedClusterVersion is the newest cluster version this binary
// supports.
func SupportedClusterVersion() uint32 { return supportedVersion }

// commandVersions maps the oneof field of a command kind newer than the
// base version to the cluster version it needs. A binary knows only the
// kinds it was built with: a newer binary's kind is missing here and
// reaches dispatch, which stops on it (ErrNeedsUpgrade).
var commandVersions = map[protoreflect.FieldNumber]uint32{}

// ErrClusterVersion marks a command of a cluster version above the
// group's: nothing was changed. The cluster's active version is raised by
// `syncctl upgrade finalize` once every node runs a binary that supports
// the command's.
var ErrClusterVersion = errors.New("fsm: command needs a higher cluster version")

// ErrClusterVersionConflict: a SetClusterVersion expected another stored
// version, or would not raise it.
var ErrClusterVersionConflict = fmt.Errorf("%w: cluster version conflict", ErrInvalidArgument)

var keyClusterVersion = []byte("cluster_version")

var opField = (&fsmpb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")

// CommandVersion is the cluster version cmd's kind needs (the base version
// for every kind this binary does not list).
func CommandVersion(cmd *fsmpb.Command) uint32 {
	fd := cmd.ProtoReflect().WhichOneof(opField)
	if fd == nil {
		return BaseClusterVersion
	}
	if v, ok := commandVersions[fd.Number()]; ok {
		return v
	}
	return BaseClusterVersion
}

// CommandName is the name of cmd's kind ("none" without one).
func CommandName(cmd *fsmpb.Command) string {
	fd := cmd.ProtoReflect().WhichOneof(opField)
	if fd == nil {
		return "none"
	}
	return string(fd.Name())
}

// ClusterVersion is a group's stored cluster version.
type ClusterVersion struct {
	// Version is the version the group runs at: BaseClusterVersion when
	// none is stored.
	Version uint32
	// SetAtMs is the proposer's clock when it was set; 0 when never.
	SetAtMs int64
	// Stored: a SetClusterVersion set it (the compare-and-set's expected
	// version is Version then, 0 otherwise).
	Stored bool
}

// Expected is what a SetClusterVersion replacing cv expects.
func (cv ClusterVersion) Expected() uint32 {
	if !cv.Stored {
		return 0
	}
	return cv.Version
}

// checkCommandVersion refuses a command of a version above the group's.
func checkCommandVersion(root *bolt.Bucket, cmd *fsmpb.Command) error {
	need := CommandVersion(cmd)
	if need <= BaseClusterVersion {
		return nil // the hot path: no read
	}
	cur, err := readClusterVersion(root)
	if err != nil {
		return err
	}
	if need > cur.Version {
		return reject(fmt.Errorf("%w: %s needs cluster version %d; this group runs at %d", ErrClusterVersion, CommandName(cmd), need, cur.Version))
	}
	return nil
}

func readClusterVersion(root *bolt.Bucket) (ClusterVersion, error) {
	cv := ClusterVersion{Version: BaseClusterVersion}
	b := root.Bucket(bucketShardMap)
	if b == nil {
		return cv, nil // a state whose schema was never created
	}
	v, err := sealed{b}.Get(keyClusterVersion)
	if err != nil || v == nil {
		return cv, err
	}
	var rec fsmpb.ClusterVersion
	if err := proto.Unmarshal(v, &rec); err != nil {
		return cv, fmt.Errorf("%w: cluster version: %v", ErrCorruptState, err)
	}
	return ClusterVersion{Version: rec.GetVersion(), SetAtMs: rec.GetSetAtMs(), Stored: true}, nil
}

// applySetClusterVersion is a compare-and-set that only raises. A version
// above this binary's supportedVersion is applied like any other (every
// replica stores the same): the node sees it and stops, since this binary
// cannot apply what may follow.
func applySetClusterVersion(root *bolt.Bucket, nowMs int64, c *fsmpb.SetClusterVersion) error {
	b := sealed{root.Bucket(bucketShardMap)}
	cur, err := readClusterVersion(root)
	if err != nil {
		return err
	}
	if have := cur.Expected(); c.GetExpected() != have {
		return reject(fmt.Errorf("%w: stored %d, expected %d", ErrClusterVersionConflict, have, c.GetExpected()))
	}
	if c.GetVersion() <= cur.Version {
		return reject(fmt.Errorf("%w: version %d does not raise %d", ErrClusterVersionConflict, c.GetVersion(), cur.Version))
	}
	v, err := stored.Marshal(&fsmpb.ClusterVersion{Version: c.GetVersion(), SetAtMs: nowMs})
	if err != nil {
		return err
	}
	return b.Put(keyClusterVersion, v)
}

// ClusterVersion is the version this group runs at.
func (f *FSM) ClusterVersion() (ClusterVersion, error) {
	var cv ClusterVersion
	err := f.view(func(root *bolt.Bucket) (err error) {
		cv, err = readClusterVersion(root)
		return err
	})
	if err != nil {
		return ClusterVersion{}, fmt.Errorf("fsm: cluster version: %w", err)
	}
	return cv, nil
}

// ReadClusterVersion reads a group's stored version from its state
// without opening the state machine: a node checks the meta group's at
// start, before anything replays or joins.
func ReadClusterVersion(st *storage.State) (ClusterVersion, error) {
	var cv ClusterVersion
	err := st.View(func(root *bolt.Bucket) (err error) {
		cv, err = readClusterVersion(root)
		return err
	})
	if err != nil {
		return ClusterVersion{}, fmt.Errorf("fsm: group %d: cluster version: %w", st.Group(), err)
	}
	return cv, nil
}

// upgradeProbe applies an UpgradeProbe; only a test build sets it
// (version_upgradetest.go). It returns how many probes the group holds.
var upgradeProbe func(root *bolt.Bucket, p *fsmpb.UpgradeProbe) (uint64, error)

// HasUpgradeProbe reports whether this binary applies UpgradeProbe (a test
// build).
func HasUpgradeProbe() bool { return upgradeProbe != nil }
