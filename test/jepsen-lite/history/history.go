// Package history is the record of a jepsen-lite run: every client
// operation with its invocation and completion times and its outcome, and
// what each replica holds once the faults are healed. Histories are written
// as JSON lines so a run can be checked again later.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
)

// Kind of operation.
type Kind string

const (
	Append Kind = "append"
	Head   Kind = "head"
	Pull   Kind = "pull"
	// Send appends to a conversation (Timeline) and delivers to the user
	// timelines of Recipients and Sender.
	Send Kind = "send"
	// RecordWrite writes to a collection (Timeline): Puts and Deletes; Key is
	// its idempotency key and Seq the version it produced.
	RecordWrite Kind = "record_write"
	// RecordSync is one Sync page a device read: After is its since
	// version, Seq the page's version, Records the changes.
	RecordSync Kind = "record_sync"
	// RecordGet is one page of a device's full read after a RESET: AfterKey
	// where it started, Seq the collection's version, Records what it held.
	RecordGet Kind = "record_get"
	// Login logs Device (of Class) of user Timeline in with session Key;
	// Ended lists the sessions the answer said it ended.
	Login Kind = "login"
	// Logout ends session Key of user Timeline.
	Logout Kind = "logout"
	// Ack asks to raise Device's cursor on user timeline Timeline to After;
	// Seq is the cursor answered, Session the device's session.
	Ack Kind = "ack"
	// MarkRead asks to raise user Timeline's read marker of Conversation
	// to After; Seq is the marker answered.
	MarkRead Kind = "mark_read"
)

// Writes says whether the kind adds an entry to Timeline.
func (k Kind) Writes() bool { return k == Append || k == Send }

// OnTimeline says whether the kind reads or writes the timeline named
// Timeline (the linearizable timeline model's operations).
func (k Kind) OnTimeline() bool { return k == Append || k == Send || k == Head || k == Pull }

// OnCollection says whether the kind works on a collection (Timeline then
// names the collection).
func (k Kind) OnCollection() bool { return k == RecordWrite || k == RecordSync || k == RecordGet }

// Outcome of an operation as the client saw it.
type Outcome string

const (
	// OK: the operation took effect (a read returned what it returned).
	OK Outcome = "ok"
	// Fail: the operation certainly did not take effect.
	Fail Outcome = "fail"
	// Unknown: it may or may not have taken effect (timeout, lost
	// connection); an append with an unknown outcome may appear at most once.
	Unknown Outcome = "unknown"
)

// Entry is one timeline entry as read.
type Entry struct {
	Seq     uint64 `json:"seq"`
	Key     string `json:"key"`
	Payload string `json:"payload"`
	// Set on conversation messages and on their deliveries.
	Sender string `json:"sender,omitempty"`
	// Set on a delivery into a user timeline: the message it carries.
	Conversation    string `json:"conversation,omitempty"`
	ConversationSeq uint64 `json:"conversation_seq,omitempty"`
}

// Op is one logical client operation. An append retried with the same
// idempotency key is one Op, from its first invocation to its last answer.
type Op struct {
	Process  int     `json:"process"`
	Kind     Kind    `json:"kind"`
	Timeline string  `json:"timeline"`
	Key      string  `json:"key,omitempty"`
	Payload  string  `json:"payload,omitempty"`
	After    uint64  `json:"after,omitempty"`
	Invoke   int64   `json:"invoke_ns"`
	Complete int64   `json:"complete_ns,omitempty"` // 0 for an unknown outcome
	Outcome  Outcome `json:"outcome"`
	Seq      uint64  `json:"seq,omitempty"`
	HeadSeq  uint64  `json:"head,omitempty"`
	Entries  []Entry `json:"entries,omitempty"`
	Error    string  `json:"error,omitempty"`
	// Send only.
	Sender     string   `json:"sender,omitempty"`
	Recipients []string `json:"recipients,omitempty"`
	// Collections only.
	Puts     map[string]string `json:"puts,omitempty"`
	Deletes  []string          `json:"deletes,omitempty"`
	Status   string            `json:"status,omitempty"`
	Digest   string            `json:"digest,omitempty"`
	Records  []Record          `json:"records,omitempty"`
	AfterKey string            `json:"after_key,omitempty"`
	More     bool              `json:"more,omitempty"`
	// Sessions only.
	Device       string   `json:"device,omitempty"`
	Class        string   `json:"class,omitempty"`
	Session      string   `json:"session,omitempty"`
	Ended        []string `json:"ended,omitempty"`
	Conversation string   `json:"conversation,omitempty"`
}

// Record is one record of a collection as read (Deleted: a tombstone).
type Record struct {
	Key     string `json:"key"`
	Version uint64 `json:"version"`
	Value   string `json:"value,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Collection is one replica's copy of a collection after the heal.
type Collection struct {
	Version uint64   `json:"version"`
	Digest  string   `json:"digest"`
	Records []Record `json:"records"`
}

// Members is who a Send delivers to: the recipients and the sender.
func (op Op) Members() []string {
	out := append([]string(nil), op.Recipients...)
	if !slices.Contains(out, op.Sender) {
		out = append(out, op.Sender)
	}
	return out
}

// Write writes ops as JSON lines.
func Write(w io.Writer, ops []Op) error {
	enc := json.NewEncoder(w)
	for i := range ops {
		if err := enc.Encode(&ops[i]); err != nil {
			return fmt.Errorf("history: write op %d: %w", i, err)
		}
	}
	return nil
}

// Read reads JSON lines written by Write.
func Read(r io.Reader) ([]Op, error) {
	var ops []Op
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("history: line %d: %w", line, err)
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	return ops, nil
}

// Final is what the replicas hold after the heal.
type Final struct {
	// Timelines: node -> timeline -> entries, read from that node's replica
	// (only timelines whose group the node hosts).
	Timelines map[string]map[string][]Entry `json:"timelines"`
	// Digests: group -> node -> state digest of that replica.
	Digests map[uint64]map[string]string `json:"digests"`
	// Collections: node -> collection -> that replica's copy.
	Collections map[string]map[string]Collection `json:"collections"`
	// Users: node -> user -> that replica's sessions, session events and
	// conversation list.
	Users map[string]map[string]UserState `json:"users"`
}

// UserState is one replica's copy of a user's device state.
type UserState struct {
	Active        []SessionState      `json:"active"`
	Ended         []SessionState      `json:"ended"`
	Events        []SessionState      `json:"events"` // device-events/<user>, in order
	Conversations []ConversationState `json:"conversations"`
}

// SessionState is a session (Reason: why it ended).
type SessionState struct {
	Session string `json:"session"`
	Device  string `json:"device,omitempty"`
	Class   string `json:"class,omitempty"`
	Reason  string `json:"reason,omitempty"`
	EndedBy string `json:"ended_by,omitempty"`
}

// ConversationState is one record of a user's conversation list.
type ConversationState struct {
	Conversation string `json:"conversation"`
	LastSeq      uint64 `json:"last_seq"`
	LastSender   string `json:"last_sender"`
	Unread       uint64 `json:"unread"`
	ReadSeq      uint64 `json:"read_seq"`
}

// Subscription is what one Subscribe consumer received, per timeline in
// arrival order. Every timeline was followed from its start.
type Subscription struct {
	Consumer int                `json:"consumer"`
	Received map[string][]Entry `json:"received"`
}
