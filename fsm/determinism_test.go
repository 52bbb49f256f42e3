package fsm

import (
	"fmt"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Replicas that apply the same commands store the same bytes: values with
// maps (metadata) are encoded in a fixed order, not Go's map order.
func TestStoredValuesWithMapsAreDeterministic(t *testing.T) {
	meta := map[string]string{}
	for i := range 16 {
		meta[fmt.Sprint("k", i)] = fmt.Sprint("v", i)
	}
	var digests []string
	for range 4 {
		h := newHarness(t)
		for i := range 10 {
			a := appendCmd("t", fmt.Sprint(i), "", int64(i))
			a.GetAppend().Metadata = meta
			w := writeCmd("c", int64(i), &fsmpb.RecordOp{Key: fmt.Sprint("r", i), Value: []byte("v"), Metadata: meta})
			w.GetRecordWrite().Copies = []*fsmpb.RecordCopy{{Key: fmt.Sprint("r", i), TargetKey: "x", Targets: []string{"d"}}}
			h.apply(a, w, copyCmd(&fsmpb.CopyItem{Collection: "e", Key: "x", Value: []byte("v"), Metadata: meta, Source: "c", SourceVersion: uint64(i + 1)}))
		}
		digests = append(digests, h.digest())
	}
	for _, d := range digests[1:] {
		if d != digests[0] {
			t.Fatalf("the same commands gave different states: %v", digests)
		}
	}
}
