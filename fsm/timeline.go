package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/seqgen"
)

// PullStatus says how a page relates to the timeline.
type PullStatus int

const (
	// PullOK: the page reaches the head.
	PullOK PullStatus = iota + 1
	// PullUpToDate: after == head; no entries.
	PullUpToDate
	// PullMore: entries remain past this page.
	PullMore
	// PullReset: after is older than the oldest entry kept.
	PullReset
	// PullAhead: after > head.
	PullAhead
)

func (s PullStatus) String() string {
	switch s {
	case PullOK:
		return "OK"
	case PullUpToDate:
		return "UP_TO_DATE"
	case PullMore:
		return "MORE"
	case PullReset:
		return "RESET"
	case PullAhead:
		return "AHEAD"
	}
	return fmt.Sprintf("PullStatus(%d)", int(s))
}

// Entry is one timeline entry as read.
type Entry struct {
	Timeline       string
	Seq            uint64
	TsMs           int64
	Payload        []byte
	IdempotencyKey string
	Metadata       map[string]string
	// Sender is set on conversation messages and their deliveries.
	Sender string
	// Conversation and ConversationSeq are set on an entry delivered from a
	// conversation; Light when its payload was left out (read it there).
	Conversation    string
	ConversationSeq uint64
	Light           bool
}

// PullResult is a page of a timeline.
type PullResult struct {
	Status  PullStatus
	Entries []Entry
	Head    uint64
	// Oldest is the oldest seq kept; 0 for an empty timeline.
	Oldest uint64
}

// Pull reads up to limit entries with seq > after from the local state. A
// page stops early once its payloads reach maxBytes (0: no byte bound), but
// always holds at least one entry.
func (f *FSM) Pull(timeline string, after uint64, limit, maxBytes int) (PullResult, error) {
	var res PullResult
	err := f.readPage(timeline, limit, func(p *pageReader) (err error) {
		res.Head, res.Oldest = p.head, p.oldest
		switch {
		case after > res.Head:
			res.Status = PullAhead
			return nil
		case after == res.Head:
			res.Status = PullUpToDate
			return nil
		case after+1 < res.Oldest:
			res.Status = PullReset
			return nil
		}
		k, v := p.c.Seek(entryKey(p.tl, after+1))
		if res.Entries, err = p.collect(k, v, p.c.Next, limit, maxBytes); err != nil {
			return err
		}
		res.Status = PullOK
		if n := len(res.Entries); n > 0 && res.Entries[n-1].Seq < res.Head {
			res.Status = PullMore
		}
		return nil
	})
	if err != nil {
		return PullResult{}, fmt.Errorf("fsm: pull %q: %w", timeline, err)
	}
	return res, nil
}

// pageReader is what Pull and History start from: a cursor over one
// timeline in a read transaction, with its head and oldest kept seq.
type pageReader struct {
	timeline     string
	tl, prefix   []byte
	c            *bolt.Cursor
	head, oldest uint64
}

// readPage checks a page request and runs fn on the timeline's pageReader.
func (f *FSM) readPage(timeline string, limit int, fn func(p *pageReader) error) error {
	if err := ValidateTimelineID(timeline); err != nil {
		return err
	}
	if limit < 1 {
		return fmt.Errorf("%w: limit %d is below 1", ErrInvalidArgument, limit)
	}
	return f.view(func(root *bolt.Bucket) error {
		tlb := sealed{root.Bucket(bucketTimelines)}
		p := &pageReader{timeline: timeline, tl: timelineKey(timeline), c: tlb.b.Cursor()}
		p.prefix = entryPrefix(p.tl)
		ctr, err := seqgen.Get(tlb, counterKey(p.tl))
		if err != nil {
			return err
		}
		p.head = ctr.Head
		if p.oldest, err = oldestKept(tlb, p.c, p.tl); err != nil {
			return err
		}
		return fn(p)
	})
}

// collect decodes the entries from (k, v) on, stepping with next, until
// limit entries or, past the first, maxBytes of payload (0: no byte bound).
func (p *pageReader) collect(k, v []byte, next func() ([]byte, []byte), limit, maxBytes int) ([]Entry, error) {
	var out []Entry
	size := 0
	for ; k != nil && bytes.HasPrefix(k, p.prefix) && len(out) < limit; k, v = next() {
		raw, err := unseal(k, v)
		if err != nil {
			return nil, err
		}
		e, err := decodeEntry(p.timeline, k[len(p.prefix):], raw)
		if err != nil {
			return nil, err
		}
		size += len(e.Payload)
		if maxBytes > 0 && size > maxBytes && len(out) > 0 {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// oldestKept is the oldest seq a timeline keeps: its first entry's, or,
// when retention dropped them all, the seq after the last dropped one (head
// + 1); 0 for a timeline that never had entries.
func oldestKept(tlb sealed, c *bolt.Cursor, tl []byte) (uint64, error) {
	prefix := entryPrefix(tl)
	if k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 {
		return binary.BigEndian.Uint64(k[len(prefix):]), nil
	}
	info, err := readInfo(tlb, tl)
	if err != nil {
		return 0, err
	}
	return info.GetFloor(), nil
}

// HistoryStatus says how a History page relates to what is kept.
type HistoryStatus int

const (
	// HistoryMore: older entries are kept; ask again before the page's first.
	HistoryMore HistoryStatus = iota + 1
	// HistoryEnd: the page reaches the oldest kept entry (it may be empty).
	HistoryEnd
	// HistoryReset: before is below the oldest kept seq (retention moved
	// past it); start again from the newest.
	HistoryReset
)

func (s HistoryStatus) String() string {
	switch s {
	case HistoryMore:
		return "MORE"
	case HistoryEnd:
		return "END"
	case HistoryReset:
		return "RESET"
	}
	return fmt.Sprintf("HistoryStatus(%d)", int(s))
}

// HistoryResult is a page of a timeline read backwards. Entries are in seq
// order: the newest up to limit of those below the asked seq.
type HistoryResult struct {
	Status  HistoryStatus
	Entries []Entry
	Head    uint64
	Oldest  uint64
}

// History reads up to limit entries with seq < before (0: from the newest)
// from the local state, newest first in the scan, returned in seq order. A
// page stops early once its payloads reach maxBytes (0: no byte bound), but
// holds at least one entry when any is kept below before.
func (f *FSM) History(timeline string, before uint64, limit, maxBytes int) (HistoryResult, error) {
	var res HistoryResult
	err := f.readPage(timeline, limit, func(p *pageReader) (err error) {
		res.Head, res.Oldest = p.head, p.oldest
		if before == 0 || before > res.Head+1 {
			before = res.Head + 1
		}
		switch {
		case res.Oldest > 0 && before < res.Oldest:
			res.Status = HistoryReset
			return nil
		case res.Oldest == 0 || before == res.Oldest:
			res.Status = HistoryEnd // nothing kept below before
			return nil
		}
		// Walk back from the last key below entry `before`.
		k, v := p.c.Seek(entryKey(p.tl, before))
		if k == nil {
			k, v = p.c.Last()
		} else {
			k, v = p.c.Prev()
		}
		if res.Entries, err = p.collect(k, v, p.c.Prev, limit, maxBytes); err != nil {
			return err
		}
		slices.Reverse(res.Entries)
		res.Status = HistoryEnd
		if n := len(res.Entries); n > 0 && res.Entries[0].Seq > res.Oldest {
			res.Status = HistoryMore
		}
		return nil
	})
	if err != nil {
		return HistoryResult{}, fmt.Errorf("fsm: history %q: %w", timeline, err)
	}
	return res, nil
}

// Head returns the newest seq of a timeline from the local state.
func (f *FSM) Head(timeline string) (uint64, error) {
	if err := ValidateTimelineID(timeline); err != nil {
		return 0, err
	}
	var head uint64
	err := f.view(func(root *bolt.Bucket) error {
		ctr, err := seqgen.Get(sealed{root.Bucket(bucketTimelines)}, counterKey(timelineKey(timeline)))
		head = ctr.Head
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fsm: head %q: %w", timeline, err)
	}
	return head, nil
}

func decodeEntry(timeline string, seqBytes, v []byte) (Entry, error) {
	var se fsmpb.StoredEntry
	if err := proto.Unmarshal(v, &se); err != nil {
		return Entry{}, fmt.Errorf("decode entry: %w", err)
	}
	return Entry{
		Timeline:        timeline,
		Seq:             binary.BigEndian.Uint64(seqBytes),
		TsMs:            se.GetTsMs(),
		Payload:         se.GetPayload(),
		IdempotencyKey:  se.GetIdempotencyKey(),
		Metadata:        se.GetMetadata(),
		Sender:          se.GetSender(),
		Conversation:    se.GetConversation(),
		ConversationSeq: se.GetConversationSeq(),
		Light:           se.GetLight(),
	}, nil
}
