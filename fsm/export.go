package fsm

import (
	"bufio"
	"fmt"
	"io"
)

// Export writes the state as one snapshot stream, the format Restore reads,
// for a backup. The stream, the applied index and the digest of the data
// buckets all come from one read transaction, so the three describe the
// same cut while applies go on. begin is called with the index and the
// digest before the first byte is written (the digest takes a pass of its
// own over the state, so it can be announced ahead of the data).
func (f *FSM) Export(w io.Writer, begin func(applied uint64, digest string) error) error {
	if f.closed.Load() {
		return ErrClosed
	}
	rtx, err := f.st.BeginRead()
	if err != nil {
		return fmt.Errorf("fsm: export: %w", err)
	}
	defer rtx.Release()
	digest, err := digestTx(rtx.Root)
	if err != nil {
		return fmt.Errorf("fsm: export: digest: %w", err)
	}
	if err := begin(readU64(rtx.Root.Bucket(bucketMeta), keyAppliedIndex), digest); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	if err := writeSnapshot(bw, rtx.Root); err != nil {
		return fmt.Errorf("fsm: export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("fsm: export: %w", err)
	}
	return nil
}
