package fsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func markReadCmd(user, conv string, seq uint64, now int64) *fsmpb.Command {
	return &fsmpb.Command{NowMs: now, Op: &fsmpb.Command_MarkRead{MarkRead: &fsmpb.MarkRead{User: user, Conversation: conv, Seq: seq}}}
}

// unreadModel is what each user's conversation list must say, computed
// from the history of deliveries and reads alone.
type unreadModel struct {
	delivered map[[2]string][]delivered // (user, conversation) -> in order
	read      map[[2]string]uint64
}

type delivered struct {
	seq    uint64
	sender string
}

func (m *unreadModel) markRead(user, conv string, seq uint64) {
	k := [2]string{user, conv}
	d := m.delivered[k]
	if len(d) == 0 {
		return
	}
	m.read[k] = max(m.read[k], min(seq, d[len(d)-1].seq))
}

func (m *unreadModel) summary(user, conv string) ConversationSummary {
	k := [2]string{user, conv}
	d := m.delivered[k]
	s := ConversationSummary{Conversation: conv, ReadSeq: m.read[k]}
	for _, x := range d {
		if x.sender != user && x.seq > s.ReadSeq {
			s.Unread++
		}
	}
	if len(d) > 0 {
		s.LastSeq, s.LastSender = d[len(d)-1].seq, d[len(d)-1].sender
	}
	return s
}

// deliverPending works off the outbox the way the node's outbox does, up
// to n jobs of conversation conv (in order), with delivery seqs.
func (h *harness) deliverPending(m *unreadModel, conv string, n int, now int64) {
	h.t.Helper()
	jobs, err := h.f.Outbox(conv, n)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, j := range jobs {
		var items []*fsmpb.DeliveryItem
		for i, r := range j.Recipients {
			items = append(items, &fsmpb.DeliveryItem{Timeline: r, Conversation: conv, ConversationSeq: j.ConversationSeq,
				DeliverySeq: j.DeliverySeqs[i], Sender: j.Sender})
			k := [2]string{r, conv}
			m.delivered[k] = append(m.delivered[k], delivered{j.ConversationSeq, j.Sender})
		}
		res := h.apply(deliverCmd(now, items...),
			deliverCmd(now, items...), // a re-delivery changes nothing
			&fsmpb.Command{NowMs: now, Op: &fsmpb.Command_DeliveryDone{DeliveryDone: &fsmpb.DeliveryDone{Conversation: conv, ConversationSeq: j.ConversationSeq}}})
		if res[0].Err != nil || res[1].Err != nil || res[1].Deliver.Written != 0 {
			h.t.Fatalf("deliver %s/%d: %v %v %+v", conv, j.ConversationSeq, res[0].Err, res[1].Err, res[1].Deliver)
		}
	}
}

// TestUnreadCountsEqualTheModel: random sends (the users' own among them),
// late deliveries and reads at random seqs (below, at and past what was
// delivered); after every step each conversation list record equals the
// model, and a restart keeps it.
func TestUnreadCountsEqualTheModel(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			h := newHarness(t)
			rng := rand.New(rand.NewPCG(seed, 7))
			users := []string{"u1", "u2", "u3"}
			convs := []string{"c1", "c2"}
			m := &unreadModel{delivered: map[[2]string][]delivered{}, read: map[[2]string]uint64{}}
			now := int64(1000)
			for step := 0; step < 400; step++ {
				now++
				conv := convs[rng.IntN(len(convs))]
				switch r := rng.IntN(10); {
				case r < 5:
					sender := users[rng.IntN(len(users))]
					if res := h.apply(sendCmd(conv, sender, users, "m", "", now, 0)); res[0].Err != nil {
						t.Fatal(res[0].Err)
					}
				case r < 8:
					h.deliverPending(m, conv, 1+rng.IntN(3), now)
				default:
					user := users[rng.IntN(len(users))]
					d := m.delivered[[2]string{user, conv}]
					seq := uint64(rng.IntN(len(d) + 3))
					res := h.apply(markReadCmd(user, conv, seq, now))
					if res[0].Err != nil {
						t.Fatal(res[0].Err)
					}
					m.markRead(user, conv, seq)
					if got, want := res[0].MarkRead.Summary.ReadSeq, m.read[[2]string{user, conv}]; got != want {
						t.Fatalf("step %d: MarkRead(%s,%s,%d) answered marker %d, want %d", step, user, conv, seq, got, want)
					}
				}
				if step%50 == 49 {
					h.reopen()
				}
				checkUnread(t, h, m, users, convs, step)
			}
			want := h.digest()
			for _, n := range []int{1, 7, 40} {
				if got := h.replayInBatches(n); got != want {
					t.Fatalf("replayed %d commands per batch, the state differs from the one applied live", n)
				}
			}
		})
	}
}

func checkUnread(t *testing.T, h *harness, m *unreadModel, users, convs []string, step int) {
	t.Helper()
	for _, u := range users {
		list, err := h.f.Conversations(u, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]ConversationSummary{}
		for _, s := range list.Conversations {
			s.LastTsMs = 0
			got[s.Conversation] = s
		}
		for _, c := range convs {
			want := m.summary(u, c)
			if want.LastSeq == 0 {
				if _, ok := got[c]; ok {
					t.Fatalf("step %d: %s lists %s, which delivered nothing to it", step, u, c)
				}
				continue
			}
			if got[c] != want {
				t.Fatalf("step %d: %s's record of %s is %+v, want %+v", step, u, c, got[c], want)
			}
		}
	}
}

func TestMarkReadNeverRewindsAndChecksInput(t *testing.T) {
	h := newHarness(t)
	h.apply(sendCmd("c", "bob", []string{"alice"}, "1", "", 10, 0), sendCmd("c", "bob", []string{"alice"}, "2", "", 11, 0))
	m := &unreadModel{delivered: map[[2]string][]delivered{}, read: map[[2]string]uint64{}}
	h.deliverPending(m, "c", 10, 12)
	if r := h.apply(markReadCmd("alice", "c", 2, 13))[0]; r.Err != nil || r.MarkRead.Summary.Unread != 0 || !r.MarkRead.Advanced {
		t.Fatalf("mark 2: %+v %v", r.MarkRead, r.Err)
	}
	if r := h.apply(markReadCmd("alice", "c", 1, 14))[0]; r.Err != nil || r.MarkRead.Summary.ReadSeq != 2 || r.MarkRead.Advanced {
		t.Fatalf("mark 1 after 2 rewound: %+v %v", r.MarkRead, r.Err)
	}
	before := h.digest()
	for _, cmd := range []*fsmpb.Command{
		markReadCmd("", "c", 1, 15),
		markReadCmd("alice", "", 1, 15),
		markReadCmd("alice", "alice", 1, 15),
		markReadCmd("alice", "conversations/x", 1, 15),
	} {
		if r := h.apply(cmd)[0]; !errors.Is(r.Err, ErrInvalidArgument) {
			t.Errorf("%v: %v, want ErrInvalidArgument", cmd, r.Err)
		}
	}
	if h.digest() != before {
		t.Error("a refused MarkRead changed the state")
	}
}

// TestMarkReadAfterDeletesInItsTransaction: a MarkRead that walks back
// over leaves emptied earlier in the same transaction (another
// conversation's spent unread keys, deleted by a MarkRead in the same
// batch) still finds its unread-index key. bbolt's Cursor.Prev returned
// nil there, so a replica that batched the two (replaying its log) kept
// the message unread while the others read it.
func TestMarkReadAfterDeletesInItsTransaction(t *testing.T) {
	h := newHarness(t)
	const many = 300 // unread keys of conversation b: several leaves
	d := func(conv string, convSeq, deliverySeq uint64) *fsmpb.DeliveryItem {
		return &fsmpb.DeliveryItem{Timeline: "u1", Conversation: conv, ConversationSeq: convSeq, DeliverySeq: deliverySeq, Sender: "u2"}
	}
	items := []*fsmpb.DeliveryItem{d("a", 1, 1)}
	for i := range uint64(many) {
		items = append(items, d("b", i+1, i+1))
	}
	res := h.apply(deliverCmd(1000, items...), appendCmd("zz", "after u1's keys", "", 1000))
	if res[0].Err != nil || res[1].Err != nil {
		t.Fatal(res[0].Err, res[1].Err)
	}
	h.digest() // commits: the next batch starts from a committed tree
	res = h.apply(markReadCmd("u1", "b", many, 1001), markReadCmd("u1", "a", 1, 1001))
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	list, err := h.f.Conversations("u1", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Conversations {
		if s.Unread != 0 {
			t.Errorf("%s: %d unread after reading it all (marker %d)", s.Conversation, s.Unread, s.ReadSeq)
		}
	}
}
