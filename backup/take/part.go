package take

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Progress follows a backup: parts done of total, and bytes written. Its
// calls come from the goroutine that called Run, one at a time; a call
// that blocks holds the backup there.
type Progress interface {
	// Start begins an attempt of parts parts (again on a retry).
	Start(parts int)
	// Group names the part about to stream: backup.MetaPartName or
	// backup.GroupPartName(id).
	Group(name string)
	// Bytes is how many bytes the file holds so far.
	Bytes(n int64)
	// PartDone is called once the part last named by Group is written
	// whole, before the next part's stream starts. Parts come in a fixed
	// order, the meta group first, then the data groups by ascending id, so
	// a caller may act on the cluster between two parts: what it does then
	// is in the parts that follow and not in those before.
	PartDone()
	// Finish ends an attempt, done or failed.
	Finish()
}

// NoProgress follows nothing; embed it to implement only some of
// Progress.
type NoProgress struct{}

func (NoProgress) Start(int)    {}
func (NoProgress) Group(string) {}
func (NoProgress) Bytes(int64)  {}
func (NoProgress) PartDone()    {}
func (NoProgress) Finish()      {}

// takePart streams one group into a part: the header chunk's applied
// index and digest go into the part's meta, each data chunk straight into
// the writer (which holds at most one frame), so memory stays bounded
// whatever the group's size.
func takePart(ctx context.Context, src Source, w *backup.Writer, name string, meta backup.PartMeta, clusterID string, pace *pacer, p Progress) error {
	p.Group(name)
	var pw io.WriteCloser
	err := src.Group(ctx, meta.GroupID, func(c *syncv1.BackupChunk) error {
		if pw == nil {
			switch {
			case c.GetGroupId() != meta.GroupID:
				return fmt.Errorf("the stream is of group %d", c.GetGroupId())
			case c.GetClusterId() != "" && c.GetClusterId() != clusterID:
				return fmt.Errorf("the stream is of cluster %q, the cluster is %q", c.GetClusterId(), clusterID)
			}
			meta.AppliedIndex, meta.Digest = c.GetAppliedIndex(), c.GetDigest()
			var err error
			if pw, err = w.Part(name, meta); err != nil {
				return err
			}
		} else if c.GetAppliedIndex() != 0 || c.GetDigest() != "" {
			return errors.New("a second header in the stream")
		}
		if len(c.GetData()) == 0 {
			return nil
		}
		if _, err := pw.Write(c.GetData()); err != nil {
			return err
		}
		p.Bytes(w.Bytes())
		return pace.wait(ctx, len(c.GetData()))
	})
	if err == nil && pw == nil {
		err = errors.New("the stream ended before its header")
	}
	if err == nil {
		err = pw.Close()
	}
	if err != nil {
		return fmt.Errorf("backup: group %d (part %q): %w", meta.GroupID, name, err)
	}
	p.Bytes(w.Bytes())
	p.PartDone()
	return nil
}
