package boltcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
)

// walk is the state of one tree's check: the pages seen so far.
type walk struct {
	r              io.ReaderAt
	pageSize       uint64
	hwm            uint64
	maxBucketDepth int      // 0: no limit
	reached        []uint64 // bitset of pages reached
	free           []uint64 // bitset of pages on the stored freelist
}

func bitSet(b []uint64, i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func setBit(b []uint64, i uint64)      { b[i/64] |= 1 << (i % 64) }

// checkTree checks the freelist and the tree of meta m in a file of size
// bytes.
func checkTree(r io.ReaderAt, size int64, m meta, opts Options) error {
	if m.hwm < 3 || m.hwm > uint64(size)/m.pageSize {
		return fmt.Errorf("high water mark %d pages, file holds %d", m.hwm, uint64(size)/m.pageSize)
	}
	w := &walk{r: r, pageSize: m.pageSize, hwm: m.hwm, maxBucketDepth: opts.MaxBucketDepth,
		reached: make([]uint64, (m.hwm+63)/64), free: make([]uint64, (m.hwm+63)/64)}
	setBit(w.reached, 0)
	setBit(w.reached, 1)
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return err
		}
	}
	if m.root < 2 || m.root >= m.hwm {
		return fmt.Errorf("root page %d out of range", m.root)
	}
	_, _, err := w.page(m.root, nil, nil, 0, 0)
	return err
}

// span marks the pages id..id+overflow as reached.
func (w *walk) span(id, overflow uint64) error {
	if id < 2 || id >= w.hwm || overflow >= w.hwm-id {
		return fmt.Errorf("page %d (+%d overflow) out of range (high water mark %d)", id, overflow, w.hwm)
	}
	for p := id; p <= id+overflow; p++ {
		if bitSet(w.reached, p) {
			return fmt.Errorf("page %d reached twice", p)
		}
		if bitSet(w.free, p) {
			return fmt.Errorf("page %d is both reachable and free", p)
		}
		setBit(w.reached, p)
	}
	return nil
}

// pageData is a page's bytes: the first pageBuf of them in memory, the rest
// read on demand.
type pageData struct {
	r    io.ReaderAt
	off  int64
	size uint64
	head []byte
}

// at returns n bytes at offset o in the page, or an error if they are not
// all inside it.
func (p *pageData) at(o, n uint64) ([]byte, error) {
	if o > p.size || n > p.size-o {
		return nil, fmt.Errorf("%d bytes at %d overrun the page (%d bytes)", n, o, p.size)
	}
	if o+n <= uint64(len(p.head)) {
		return p.head[o : o+n], nil
	}
	b := make([]byte, n)
	if _, err := p.r.ReadAt(b, p.off+int64(o)); err != nil {
		return nil, err
	}
	return b, nil
}

// read loads page id: its header checked against id and its span marked.
func (w *walk) read(id uint64, wantFlags ...uint16) (*pageData, uint16, uint16, error) {
	if id < 2 || id >= w.hwm {
		return nil, 0, 0, fmt.Errorf("page %d out of range (high water mark %d)", id, w.hwm)
	}
	off := int64(id * w.pageSize)
	first := make([]byte, w.pageSize) // below the high water mark: inside the file
	if _, err := w.r.ReadAt(first, off); err != nil {
		return nil, 0, 0, fmt.Errorf("page %d: %w", id, err)
	}
	flags, count, overflow := ne.Uint16(first[8:]), ne.Uint16(first[10:]), uint64(ne.Uint32(first[12:]))
	if got := ne.Uint64(first); got != id {
		return nil, 0, 0, fmt.Errorf("page %d says it is page %d", id, got)
	}
	if !slices.Contains(wantFlags, flags) {
		return nil, 0, 0, fmt.Errorf("page %d has type %#x, want one of %#x", id, flags, wantFlags)
	}
	if err := w.span(id, overflow); err != nil {
		return nil, 0, 0, err
	}
	p := &pageData{r: w.r, off: off, size: (overflow + 1) * w.pageSize, head: first}
	if p.size > w.pageSize {
		p.head = make([]byte, min(p.size, pageBuf))
		copy(p.head, first)
		if _, err := w.r.ReadAt(p.head[w.pageSize:], off+int64(w.pageSize)); err != nil {
			return nil, 0, 0, fmt.Errorf("page %d: %w", id, err)
		}
	}
	return p, flags, count, nil
}

func (w *walk) freelist(id uint64) error {
	p, _, count, err := w.read(id, freelistPage)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	start, n := uint64(pageHeaderLen), uint64(count)
	if count == 0xffff { // the real count is the first element
		b, err := p.at(start, 8)
		if err != nil {
			return fmt.Errorf("freelist: %w", err)
		}
		start, n = start+8, ne.Uint64(b)
	}
	if n > (p.size-start)/8 {
		return fmt.Errorf("freelist: %d ids overrun page %d", n, id)
	}
	ids, err := p.at(start, n*8)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	for i := uint64(0); i < n; i++ {
		fid := ne.Uint64(ids[i*8:])
		if fid < 2 || fid >= w.hwm {
			return fmt.Errorf("freelist: page %d out of range", fid)
		}
		if bitSet(w.free, fid) || bitSet(w.reached, fid) {
			return fmt.Errorf("freelist: page %d listed twice or in use", fid)
		}
		setBit(w.free, fid)
	}
	return nil
}

// page walks the subtree at id: every key in [lo, hi) (nil: unbounded; lo
// nil also means id is the root of its tree). level is the bucket nesting:
// 0 the root bucket, 1 a top-level bucket. It returns the subtree's height
// (0: a leaf) and first key.
func (w *walk) page(id uint64, lo, hi []byte, level, depth int) (int, []byte, error) {
	if depth > maxDepth {
		return 0, nil, fmt.Errorf("page %d: tree deeper than %d", id, maxDepth)
	}
	p, flags, count, err := w.read(id, branchPage, leafPage)
	if err != nil {
		return 0, nil, err
	}
	// bbolt removes a page that empties, by the key it had: an empty page
	// below a root has none, and would be freed while still linked.
	if count == 0 && lo != nil {
		return 0, nil, fmt.Errorf("page %d: empty, below the root", id)
	}
	height, first, err := w.elements(p, flags, count, lo, hi, level, depth)
	if err != nil {
		return 0, nil, fmt.Errorf("page %d: %w", id, err)
	}
	return height, first, nil
}

// elements checks the elements of page p and walks their subtrees; it
// returns the height and the first key of p's subtree. Beyond tx.Check's
// rules, two that bbolt's writes rely on (a file that breaks them makes
// bbolt free pages still linked, then panic): every leaf of a tree at one
// depth (rebalancing merges siblings), and a branch key equal to its child's
// first key (a child rewritten replaces its entry in the parent by that key).
func (w *walk) elements(p *pageData, flags, count uint16, lo, hi []byte, level, depth int) (height int, first []byte, err error) {
	n := uint64(count)
	if flags == branchPage && n == 0 {
		return 0, nil, errors.New("empty branch")
	}
	if pageHeaderLen+n*elementLen > p.size {
		return 0, nil, fmt.Errorf("%d elements overrun the page", n)
	}
	key := func(i uint64) (elem, k []byte, err error) {
		eo := pageHeaderLen + i*elementLen
		if elem, err = p.at(eo, elementLen); err != nil {
			return nil, nil, err
		}
		var pos, ksize uint64
		if flags == branchPage {
			pos, ksize = uint64(ne.Uint32(elem)), uint64(ne.Uint32(elem[4:]))
		} else {
			pos, ksize = uint64(ne.Uint32(elem[4:])), uint64(ne.Uint32(elem[8:]))
		}
		if ksize == 0 || ksize > maxKeyLen {
			return nil, nil, fmt.Errorf("element %d: key of %d bytes", i, ksize)
		}
		if k, err = p.at(eo+pos, ksize); err != nil {
			return nil, nil, fmt.Errorf("element %d: key: %w", i, err)
		}
		return elem, k, nil
	}
	var prev []byte
	for i := uint64(0); i < n; i++ {
		elem, k, err := key(i)
		if err != nil {
			return 0, nil, err
		}
		switch {
		case lo != nil && bytes.Compare(k, lo) < 0:
			return 0, nil, fmt.Errorf("element %d: key below its parent's", i)
		case prev != nil && bytes.Compare(k, prev) <= 0:
			return 0, nil, fmt.Errorf("element %d: keys out of order", i)
		case hi != nil && bytes.Compare(k, hi) >= 0:
			return 0, nil, fmt.Errorf("element %d: key not below the next parent key", i)
		}
		if i == 0 {
			first = k
		}
		prev = k
		if flags == branchPage {
			next := hi
			if i+1 < n {
				if _, next, err = key(i + 1); err != nil {
					return 0, nil, err
				}
			}
			h, childFirst, err := w.page(ne.Uint64(elem[8:]), k, next, level, depth+1)
			if err != nil {
				return 0, nil, err
			}
			if !bytes.Equal(childFirst, k) {
				return 0, nil, fmt.Errorf("element %d: key differs from its child's first key", i)
			}
			if i > 0 && h+1 != height {
				return 0, nil, fmt.Errorf("element %d: leaves at different depths", i)
			}
			height = h + 1
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(elem), uint64(ne.Uint32(elem[4:])), uint64(ne.Uint32(elem[8:])), uint64(ne.Uint32(elem[12:]))
		voff := pageHeaderLen + i*elementLen + pos + ksize // inside the page: key checked it
		if vsize > p.size-voff {
			return 0, nil, fmt.Errorf("element %d: value of %d bytes overruns the page", i, vsize)
		}
		switch {
		case eflags == 0 && level == 0:
			return 0, nil, fmt.Errorf("element %d: a value in the root bucket", i)
		case eflags == 0:
			continue
		case eflags != bucketLeafFlag:
			return 0, nil, fmt.Errorf("element %d: flags %#x", i, eflags)
		case w.maxBucketDepth > 0 && level >= w.maxBucketDepth:
			return 0, nil, fmt.Errorf("element %d: a bucket nested %d deep, the limit is %d", i, level+1, w.maxBucketDepth)
		}
		if err := w.bucket(p, voff, vsize, level, depth); err != nil {
			return 0, nil, fmt.Errorf("bucket %q: %w", k, err)
		}
	}
	return height, first, nil
}

// bucket checks a bucket value: its root page's tree, or its inline page.
func (w *walk) bucket(p *pageData, off, vsize uint64, level, depth int) error {
	if vsize < bucketLen {
		return fmt.Errorf("bucket value of %d bytes", vsize)
	}
	hdr, err := p.at(off, bucketLen)
	if err != nil {
		return err
	}
	if root := ne.Uint64(hdr); root != 0 {
		if vsize != bucketLen {
			return fmt.Errorf("bucket with root page %d and %d inline bytes", root, vsize-bucketLen)
		}
		_, _, err := w.page(root, nil, nil, level+1, depth+1)
		return err
	}
	// Inline: a leaf page inside the value (bbolt inlines only buckets
	// smaller than a quarter page).
	n := vsize - bucketLen
	if n < pageHeaderLen || n > w.pageSize {
		return fmt.Errorf("inline bucket of %d bytes", n)
	}
	b, err := p.at(off+bucketLen, n)
	if err != nil {
		return err
	}
	// bbolt writes an inline page with id 0 and no overflow, and frees the
	// page an inline bucket's id names once the bucket outgrows its value.
	if id, flags, overflow := ne.Uint64(b), ne.Uint16(b[8:]), ne.Uint32(b[12:]); id != 0 || flags != leafPage || overflow != 0 {
		return fmt.Errorf("inline bucket page: id %d, type %#x, overflow %d; want a leaf 0 without overflow", id, flags, overflow)
	}
	inline := &pageData{off: -1, size: n, head: b}
	_, _, err = w.elements(inline, leafPage, ne.Uint16(b[10:]), nil, nil, level+1, depth+1)
	return err
}
