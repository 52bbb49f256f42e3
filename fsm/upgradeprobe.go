package fsm

import (
	"fmt"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// UpgradeProbe is the command kind a test build adds at the cluster
// version after this release's (version_upgradetest.go registers it), so
// that the rolling-upgrade test has a command release binaries do not
// apply. Release binaries compile it but never register it: to them it is
// a kind they do not know.

// probeVersion is the cluster version UpgradeProbe needs.
const probeVersion = releaseClusterVersion + 1

// MaxProbeBytes bounds an UpgradeProbe's key and note.
const MaxProbeBytes = 256

var (
	keyProbeCount  = []byte("upgrade_probes")
	keyProbePrefix = "upgrade_probe/"
	probeField     = (&fsmpb.Command{}).ProtoReflect().Descriptor().Fields().ByName("upgrade_probe").Number()
)

// registerUpgradeProbe makes this binary support probeVersion and apply
// UpgradeProbe; it returns what undoes it (for tests).
func registerUpgradeProbe() (undo func()) {
	supportedVersion = probeVersion
	commandVersions[probeField] = probeVersion
	upgradeProbe = applyUpgradeProbe
	return func() {
		supportedVersion = releaseClusterVersion
		delete(commandVersions, probeField)
		upgradeProbe = nil
	}
}

// EnableUpgradeProbe makes this process a test build (see
// registerUpgradeProbe) until undo is called: for tests of other packages,
// which run every node of a test in one process.
func EnableUpgradeProbe() (undo func()) { return registerUpgradeProbe() }

// applyUpgradeProbe stores the note under the key next to the shard map
// (a bucket every group has and the digest covers) and counts the probes.
func applyUpgradeProbe(root *bolt.Bucket, p *fsmpb.UpgradeProbe) (uint64, error) {
	if err := ValidateUpgradeProbe(p); err != nil {
		return 0, reject(err)
	}
	b := sealed{root.Bucket(bucketShardMap)}
	n, err := b.GetU64(keyProbeCount)
	if err != nil {
		return 0, err
	}
	if err := b.Put([]byte(keyProbePrefix+p.GetKey()), []byte(p.GetNote())); err != nil {
		return 0, err
	}
	return n + 1, b.Put(keyProbeCount, u64(n+1))
}

// ValidateUpgradeProbe checks a probe's key and note.
func ValidateUpgradeProbe(p *fsmpb.UpgradeProbe) error {
	if p.GetKey() == "" || len(p.GetKey()) > MaxProbeBytes || len(p.GetNote()) > MaxProbeBytes ||
		!utf8.ValidString(p.GetKey()) || !utf8.ValidString(p.GetNote()) {
		return fmt.Errorf("%w: a probe has a key of 1 to %d bytes and a note of at most %d, UTF-8", ErrInvalidArgument, MaxProbeBytes, MaxProbeBytes)
	}
	return nil
}
