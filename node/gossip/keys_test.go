package gossip

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/syncstore/syncstore/internal/testutil"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func startGossip(t *testing.T, id string, keys ...[]byte) *Gossip {
	t.Helper()
	g, err := Start(Config{NodeID: id, BindAddr: "127.0.0.1:0", GRPCAddr: id + ":1", RaftAddr: id + ":2",
		ProbeInterval: 100 * time.Millisecond, Keys: keys}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func memberIDs(g *Gossip) []string {
	var ids []string
	for _, m := range g.Members() {
		if m.Health == HealthAlive {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func waitMembers(t *testing.T, g *Gossip, want ...string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := memberIDs(g); !slices.Equal(got, want) {
			return fmt.Errorf("%s sees %v, want %v", g.self, got, want)
		}
		return nil
	})
}

func TestGossipWithAWrongKeyIsNotAccepted(t *testing.T) {
	tests := []struct {
		name     string
		intruder [][]byte
	}{
		{"wrong key", [][]byte{key(2)}},
		{"plaintext", nil},
	}
	a := startGossip(t, "a", key(1))
	b := startGossip(t, "b", key(1))
	b.Join([]string{a.Addr()})
	waitMembers(t, a, "a", "b")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startGossip(t, "c-"+tt.name, tt.intruder...)
			c.Join([]string{a.Addr()}) // synchronous: the push-pull failed or succeeded
			if got := memberIDs(c); !slices.Equal(got, []string{c.self}) {
				t.Fatalf("the intruder learnt the members %v", got)
			}
			// A member that joins afterwards with the key is a barrier: by then
			// a has processed whatever the intruder sent before it.
			d := startGossip(t, "d-"+tt.name, key(1))
			d.Join([]string{a.Addr()})
			testutil.Eventually(t, 10*time.Second, func() error {
				if !slices.Contains(memberIDs(a), d.self) {
					return fmt.Errorf("a does not see %s yet", d.self)
				}
				return nil
			})
			if slices.Contains(memberIDs(a), c.self) || slices.Contains(memberIDs(b), c.self) {
				t.Fatalf("members accepted %s: a %v, b %v", c.self, memberIDs(a), memberIDs(b))
			}
		})
	}
}

// A key rotation without a restart: every node gets the new key as a
// second one, then uses it, then drops the old one; gossip goes on
// throughout and a node with only the new key can join at the end.
func TestGossipKeyRotation(t *testing.T) {
	oldKey, newKey := key(1), key(9)
	a := startGossip(t, "a", oldKey)
	b := startGossip(t, "b", oldKey)
	b.Join([]string{a.Addr()})
	waitMembers(t, a, "a", "b")
	for _, step := range [][][]byte{{oldKey, newKey}, {newKey, oldKey}, {newKey}} {
		for _, g := range []*Gossip{a, b} {
			if err := g.SetKeys(step); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := startGossip(t, "c", newKey)
	c.Join([]string{a.Addr()})
	waitMembers(t, c, "a", "b", "c")
	old := startGossip(t, "old", oldKey)
	old.Join([]string{a.Addr()})
	if got := memberIDs(old); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("a node with the dropped key joined: %v", got)
	}
	plain := startGossip(t, "plain")
	if err := plain.SetKeys([][]byte{newKey}); err == nil {
		t.Fatal("SetKeys turned encryption on without a restart")
	}
}
