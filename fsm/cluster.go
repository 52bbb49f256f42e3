package fsm

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// keyClusterID is the key of the cluster's id (meta group) in
// bucketShardMap: next to the map, so it is in every snapshot, export and
// digest without a schema change.
var keyClusterID = []byte("cluster_id")

// MaxClusterIDBytes bounds a cluster id (the raft handshake carries it in
// one length byte and gossip in every alive message).
const MaxClusterIDBytes = 64

// ErrClusterIDConflict: a SetClusterID expected another stored id.
var ErrClusterIDConflict = fmt.Errorf("%w: cluster id conflict", ErrInvalidArgument)

// ValidateClusterID checks a cluster id: 1..MaxClusterIDBytes bytes of
// letters, digits, '-', '_' and '.', so it prints as it is in logs and
// errors. The error wraps ErrInvalidArgument.
func ValidateClusterID(id string) error {
	if id == "" || len(id) > MaxClusterIDBytes {
		return fmt.Errorf("%w: a cluster id has 1 to %d bytes, not %d", ErrInvalidArgument, MaxClusterIDBytes, len(id))
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("%w: cluster id %q: only letters, digits, '-', '_' and '.'", ErrInvalidArgument, id)
		}
	}
	return nil
}

func applySetClusterID(root *bolt.Bucket, c *fsmpb.SetClusterID) error {
	if err := ValidateClusterID(c.GetClusterId()); err != nil {
		return reject(err)
	}
	if c.GetExpected() != "" {
		if err := ValidateClusterID(c.GetExpected()); err != nil {
			return reject(err)
		}
	}
	b := sealed{root.Bucket(bucketShardMap)}
	cur, err := b.Get(keyClusterID)
	if err != nil {
		return err
	}
	if string(cur) != c.GetExpected() {
		return reject(fmt.Errorf("%w: stored %q, expected %q", ErrClusterIDConflict, cur, c.GetExpected()))
	}
	return b.Put(keyClusterID, []byte(c.GetClusterId()))
}

// ClusterID is the cluster id the meta group stores, "" before one is set
// (a cluster bootstrapped by a binary older than cluster ids, until its
// leader sets one).
func (f *FSM) ClusterID() (string, error) {
	var id string
	err := f.view(func(root *bolt.Bucket) error {
		v, err := sealed{root.Bucket(bucketShardMap)}.Get(keyClusterID)
		id = string(v)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("fsm: cluster id: %w", err)
	}
	return id, nil
}
