package fsm

import (
	"slices"
	"sync"
)

// digestsKept bounds the digest points a replica remembers.
const digestsKept = 8

// digestPoints holds this replica's digests at recent digest points: the
// state hashed right after a DigestPoint was applied, so replicas compare
// digests of exactly the same log prefix. Hashing reads the whole state, in
// a read transaction of its own while applies go on.
type digestPoints struct {
	mu     sync.Mutex
	byIdx  map[uint64]string
	order  []uint64
	hashes sync.WaitGroup
}

// takeDigest starts hashing the state as it is now (just after the digest
// point at index was applied). Called on the apply goroutine.
func (f *FSM) takeDigest(index uint64) {
	rtx, err := f.st.BeginRead()
	if err != nil {
		f.log.Warn("fsm: digest point: cannot read the state", "index", index, "err", err)
		return
	}
	f.digests.hashes.Go(func() {
		defer rtx.Release()
		d, err := digestTx(rtx.Root)
		if err != nil {
			f.log.Warn("fsm: digest point: hashing failed", "index", index, "err", err)
			return
		}
		f.digests.put(index, d)
	})
}

func (p *digestPoints) put(index uint64, d string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byIdx == nil {
		p.byIdx = map[uint64]string{}
	}
	p.byIdx[index] = d
	// Hashes finish in any order: keep the newest points, not the last
	// finished (a slow older hash must not evict the newest point).
	p.order = append(p.order, index)
	slices.Sort(p.order)
	for len(p.order) > digestsKept {
		delete(p.byIdx, p.order[0])
		p.order = p.order[1:]
	}
}

// DigestAt returns this replica's digest at the digest point at index, if
// it has hashed it (and still keeps it).
func (f *FSM) DigestAt(index uint64) (string, bool) {
	f.digests.mu.Lock()
	defer f.digests.mu.Unlock()
	d, ok := f.digests.byIdx[index]
	return d, ok
}
