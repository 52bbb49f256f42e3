package fsm

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// MaxBatchAppends bounds the appends of one AppendBatch entry. Like every
// limit here it is fixed: replicas must agree on what they refuse.
const MaxBatchAppends = 1024

// BatchItem is the outcome of one append of an AppendBatch: Append when it
// was applied (or deduplicated), Err when it alone was refused.
type BatchItem struct {
	Append *AppendResult
	Err    error
}

// applyAppendBatch applies each append in order, as applyAppend would apply
// it as an entry of its own: a refused append changes nothing and does not
// stop the ones after it. A storage failure fails the whole entry, as for
// any command.
func applyAppendBatch(root *bolt.Bucket, ch *Changes, nowMs int64, b *fsmpb.AppendBatch) ([]BatchItem, error) {
	n := len(b.GetAppends())
	if n == 0 || n > MaxBatchAppends {
		return nil, reject(fmt.Errorf("%w: an append batch holds %d appends; it must hold 1 to %d", ErrInvalidArgument, n, MaxBatchAppends))
	}
	items := make([]BatchItem, n)
	for i, a := range b.GetAppends() {
		res, err := applyAppend(root, ch, nowMs, a)
		if err := storageFailure(err); err != nil {
			return nil, fmt.Errorf("append %d of the batch: %w", i, err)
		}
		items[i] = BatchItem{Append: res, Err: rejection(err)}
	}
	return items, nil
}
