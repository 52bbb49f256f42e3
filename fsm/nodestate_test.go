package fsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func nodeStateCmd(id string, from, to NodeState, dead bool) *fsmpb.Command {
	return &fsmpb.Command{NowMs: 1000, Op: &fsmpb.Command_SetNodeState{SetNodeState: &fsmpb.SetNodeState{
		NodeId: id, ExpectedState: fsmpb.NodeState(from), State: fsmpb.NodeState(to), Dead: dead,
	}}}
}

func nodeStates(t *testing.T, h *harness) map[string]Node {
	t.Helper()
	nodes, err := h.f.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Node{}
	for _, nd := range nodes {
		out[nd.ID] = nd
	}
	return out
}

// TestSetNodeStateIsValidated: each refused SetNodeState changes nothing
// (same digest), whatever its content; the allowed steps are applied.
func TestSetNodeStateIsValidated(t *testing.T) {
	h := newHarness(t)
	h.apply(registerCmd("n1", "127.0.0.1:7001", "127.0.0.1:7000"), registerCmd("n2", "127.0.0.1:7011", "127.0.0.1:7010"))
	refused := []struct {
		name string
		cmd  *fsmpb.Command
		want error
	}{
		{"unknown node", nodeStateCmd("n9", NodeActive, NodeDraining, false), ErrUnknownNode},
		{"bad node id", nodeStateCmd("a/b", NodeActive, NodeDraining, false), ErrInvalidArgument},
		{"huge node id", nodeStateCmd(strings.Repeat("x", 40000), NodeActive, NodeDraining, false), ErrInvalidArgument},
		{"unknown state", nodeStateCmd("n1", NodeActive, NodeState(7), false), ErrInvalidArgument},
		{"active straight to removed", nodeStateCmd("n1", NodeActive, NodeRemoved, false), ErrInvalidArgument},
		{"back to active", nodeStateCmd("n1", NodeDraining, NodeActive, false), ErrInvalidArgument},
		{"wrong expected state", nodeStateCmd("n1", NodeDraining, NodeRemoved, false), ErrNodeState},
	}
	for _, tc := range refused {
		before := h.digest()
		r := h.apply(tc.cmd)[0]
		if !errors.Is(r.Err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, r.Err, tc.want)
		}
		if h.digest() != before {
			t.Errorf("%s: refused but the state changed", tc.name)
		}
	}

	if r := h.apply(nodeStateCmd("n2", NodeActive, NodeDraining, false))[0]; r.Err != nil {
		t.Fatal(r.Err)
	}
	// n1 is now the last active node: draining it is refused.
	before := h.digest()
	if r := h.apply(nodeStateCmd("n1", NodeActive, NodeDraining, true))[0]; !errors.Is(r.Err, ErrNodeState) {
		t.Fatalf("draining the last active node: %v", r.Err)
	}
	if h.digest() != before {
		t.Fatal("refused but the state changed")
	}
	// A re-registration (restart) keeps the state.
	h.apply(registerCmd("n2", "127.0.0.1:7011", "127.0.0.1:7099"))
	if nd := nodeStates(t, h)["n2"]; nd.State != NodeDraining || nd.GRPCAddr != "127.0.0.1:7099" || nd.StateSinceMs != 1000 {
		t.Fatalf("after a restart n2 is %+v, want draining at its new gRPC address", nd)
	}
	// Draining may be declared dead, never undeclared.
	for _, c := range []*fsmpb.Command{nodeStateCmd("n2", NodeDraining, NodeDraining, true), nodeStateCmd("n2", NodeDraining, NodeRemoved, false)} {
		if r := h.apply(c)[0]; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if nd := nodeStates(t, h)["n2"]; nd.State != NodeRemoved || !nd.Dead {
		t.Fatalf("n2 is %+v, want removed and dead", nd)
	}
	// A removed node's raft address is free again, and the removed id comes
	// back active when it registers again.
	if r := h.apply(registerCmd("n3", "127.0.0.1:7011", "127.0.0.1:7020"))[0]; r.Err != nil {
		t.Fatalf("a removed node's address is taken: %v", r.Err)
	}
	if r := h.apply(registerCmd("n2", "127.0.0.1:7031", "127.0.0.1:7030"))[0]; r.Err != nil {
		t.Fatalf("a removed node cannot register again: %v", r.Err)
	}
	if nd := nodeStates(t, h)["n2"]; nd.State != NodeActive || nd.Dead {
		t.Fatalf("n2 registered again is %+v, want active", nd)
	}
}
