// Package boltcheck refuses a damaged bbolt file before bbolt opens it.
//
// bbolt trusts its file. On a damaged one it reads out of bounds or
// panics, and its own checks are no help: tx.Check, and the free page scan
// that every read-write open of a NoFreelistSync file runs, panic on
// goroutines of their own, where no recover can catch it. So a file that
// comes from elsewhere (a snapshot a peer sent, a state file found on disk)
// is first walked here with bounds-checked reads only; File returns an
// error, never panics, and only a file it accepts is given to bbolt.
//
// The checks follow bbolt v1.4's file format; DESIGN.md says what they
// cover, what they do not, and what a bbolt upgrade must re-run.
package boltcheck

import (
	"fmt"
	"os"
)

// Options are what a caller knows of its own layout, on top of what bbolt
// requires of any file.
type Options struct {
	// MaxBucketDepth is how deep buckets may nest: 1 means the top-level
	// buckets hold only keys and values, no buckets; 0 means no limit
	// (beyond a bound on the depth of branch pages and buckets together
	// that no real file comes near).
	MaxBucketDepth int
}

// File checks, with bounds-checked reads only, everything bbolt takes for
// granted when it opens, checks, reads and writes a file: both meta pages
// valid with one page size; for the tree of each meta, every page within
// the file and below the high water mark, self-identified, of the right
// type, reached once and not free; elements, keys and values inside their
// page; keys non-empty, at most bbolt's limit and in B+tree order (the same
// rules as tx.Check, whose violations bbolt turns into panics); every leaf
// of a tree at one depth; no empty page below a root; a branch key equal
// to its child's first key; the root bucket holding only buckets (bbolt
// cannot write anything else there); bucket values well formed, inline
// buckets leaf pages with id 0 (as bbolt writes them: it would free the
// page a stale id names). On top, buckets nest at most opts.MaxBucketDepth
// deep. It reads f with ReadAt only, so f's offset is left as it was.
//
// It does not see damage inside a key or a value that leaves the structure
// valid (a checksum of the file does), and it leaves to tx.Check what bbolt
// reports without panicking, such as pages neither reachable nor free: a
// caller runs tx.Check on a file File accepted.
func File(f *os.File, opts Options) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	buf := make([]byte, HeaderLen)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("not a bbolt file: %d bytes", size)
	}
	m0, err := parseMeta(buf, 0)
	if err != nil {
		return err
	}
	ps := m0.pageSize
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return fmt.Errorf("page size %d", ps)
	}
	if _, err := f.ReadAt(buf, int64(ps)); err != nil {
		return fmt.Errorf("no second meta page: %d bytes", size)
	}
	m1, err := parseMeta(buf, 1)
	if err != nil {
		return err
	}
	if m1.pageSize != ps {
		return fmt.Errorf("meta pages disagree on the page size: %d, %d", ps, m1.pageSize)
	}
	// bbolt opens with the meta of the higher txid and falls back to the
	// other: both trees must hold.
	if err := checkTree(f, size, m0, opts); err != nil {
		return fmt.Errorf("meta 0: %w", err)
	}
	if m1.root != m0.root || m1.freelist != m0.freelist || m1.hwm != m0.hwm {
		if err := checkTree(f, size, m1, opts); err != nil {
			return fmt.Errorf("meta 1: %w", err)
		}
	}
	return nil
}
