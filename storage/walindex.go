package storage

// The WAL's in-memory index: for each group, where each of its live
// entries is stored. It is rebuilt at open by replaying every record in
// order, and kept up to date by applying each committed record the same
// way, so what a restart finds is what was there before it.

// loc is where a record is: its segment, offset and length (header
// included).
type loc struct {
	seg uint64
	off int64
	n   int
}

// groupIndex is one group's live log: entries first..last, locs[i] holding
// entry first+i. Empty when len(locs) == 0.
type groupIndex struct {
	first uint64
	locs  []loc
}

func (g *groupIndex) last() uint64 {
	if len(g.locs) == 0 {
		return 0
	}
	return g.first + uint64(len(g.locs)) - 1
}

func (g *groupIndex) bounds() (first, last uint64) {
	if len(g.locs) == 0 {
		return 0, 0
	}
	return g.first, g.last()
}

// walIndex is the index of every group, with the number of live entries
// each segment holds (a segment holding none can be deleted, oldest first).
type walIndex struct {
	groups map[uint64]*groupIndex
	live   map[uint64]int // segment id -> live entries in it
}

func newWALIndex() *walIndex {
	return &walIndex{groups: map[uint64]*groupIndex{}, live: map[uint64]int{}}
}

func (x *walIndex) group(id uint64) *groupIndex {
	g := x.groups[id]
	if g == nil {
		g = &groupIndex{}
		x.groups[id] = g
	}
	return g
}

// drop forgets locs (entries no longer live).
func (x *walIndex) drop(locs []loc) {
	for _, l := range locs {
		x.live[l.seg]--
	}
}

// keep trims g.locs to n entries from the front at from, releasing the
// backing array when it has become mostly unused.
func (g *groupIndex) keep(from, n int) {
	g.locs = g.locs[from : from+n]
	if cap(g.locs) > 64 && cap(g.locs) > 4*len(g.locs) {
		g.locs = append([]loc(nil), g.locs...)
	}
}

// The replay rules, one per record kind. They take any sequence of records
// (whatever Raft asked for, in order) to the log Raft expects.

// entry stores entry index at l. Raft appends index last+1; an index
// within the log overwrites it and drops everything after it (a follower's
// conflicting suffix); an index past last+1 or before first starts the
// log afresh there (after a snapshot was installed).
func (x *walIndex) entry(group, index uint64, l loc) {
	g := x.group(group)
	switch {
	case len(g.locs) > 0 && index == g.last()+1:
	case len(g.locs) > 0 && index >= g.first && index <= g.last():
		at := int(index - g.first)
		x.drop(g.locs[at:])
		g.locs = g.locs[:at]
	default:
		x.drop(g.locs)
		g.locs = g.locs[:0]
		g.first = index
	}
	g.locs = append(g.locs, l)
	x.live[l.seg]++
}

// truncate drops entries from index on (from <= first empties the log).
func (x *walIndex) truncate(group, from uint64) {
	g := x.group(group)
	if len(g.locs) == 0 || from > g.last() {
		return
	}
	if from <= g.first {
		x.drop(g.locs)
		g.locs = g.locs[:0]
		return
	}
	at := int(from - g.first)
	x.drop(g.locs[at:])
	g.locs = g.locs[:at]
}

// compact drops entries up to index.
func (x *walIndex) compact(group, upTo uint64) {
	g := x.group(group)
	if len(g.locs) == 0 || upTo < g.first {
		return
	}
	if upTo >= g.last() {
		x.drop(g.locs)
		g.locs = g.locs[:0]
		return
	}
	n := int(upTo - g.first + 1)
	x.drop(g.locs[:n])
	g.keep(n, len(g.locs)-n)
	g.first = upTo + 1
}

// at is where entry index of group is, if it is live.
func (x *walIndex) at(group, index uint64) (loc, bool) {
	g := x.groups[group]
	if g == nil || len(g.locs) == 0 || index < g.first || index > g.last() {
		return loc{}, false
	}
	return g.locs[index-g.first], true
}
