package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/node"
)

// TestClusterShapeCommands: node list, group list, replica move,
// transfer-leader and node remove, each with --wait where it has one,
// against a four-node cluster; refusals exit with the right code and say
// why.
func TestClusterShapeCommands(t *testing.T) {
	c := testcluster.New(t, 4, func(cfg *node.Config) { cfg.Shards = 4 })
	addr := strings.Join(c.Addrs(), ",")
	smap := c.Members[c.WaitLeader(0)].Node.ShardMap()
	g1, _ := smap.Group(1)
	spare := ""
	for _, m := range c.Members {
		if !slices.Contains(g1.Replicas, m.ID) {
			spare = m.ID
		}
	}

	out, err := run(t, addr, "node", "list")
	if err != nil || !strings.Contains(out, "STATE") || strings.Count(out, "active") != 4 {
		t.Fatalf("node list: %v\n%s", err, out)
	}
	out, err = run(t, addr, "--json", "group", "list", "--rate-window", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	var groups struct {
		Groups []groupListEntry `json:"groups"`
	}
	if err := json.Unmarshal([]byte(out), &groups); err != nil || len(groups.Groups) != 4 || groups.Groups[0].NSlots != 1024 ||
		len(groups.Groups[0].Replicas) != 3 || groups.Groups[0].WriteRate < 0 || groups.Groups[0].Entries == 0 {
		t.Fatalf("--json group list: %+v %v\n%s", groups, err, out)
	}

	refused := []struct {
		args []string
		want string
	}{
		{[]string{"replica", "move", "1", "--from", g1.Replicas[1], "--to", g1.Replicas[0]}, "FailedPrecondition: node: move does not fit the group"},
		{[]string{"replica", "move", "9", "--from", g1.Replicas[1], "--to", spare}, "NotFound"},
		{[]string{"group", "transfer-leader", "1", "--to", spare}, "holds no replica of group 1"},
		{[]string{"node", "remove", "n9"}, "NotFound"},
	}
	for _, r := range refused {
		if _, err := run(t, addr, r.args...); err == nil || !strings.Contains(describe(err), r.want) {
			t.Errorf("%v: %v, want %q", r.args, err, r.want)
		}
	}

	out, err = run(t, addr, "replica", "move", "1", "--from", g1.Replicas[1], "--to", spare, "--wait")
	if err != nil || !strings.Contains(out, "(pinned)") || !strings.Contains(out, "group 1: done") {
		t.Fatalf("replica move --wait: %v\n%s", err, out)
	}
	out, err = run(t, addr, "group", "transfer-leader", "1", "--to", spare, "--wait")
	if err != nil || !strings.Contains(out, "leader "+spare) || !strings.Contains(out, "group 1: done") {
		t.Fatalf("transfer-leader --wait: %v\n%s", err, out)
	}
	out, err = run(t, addr, "group", "list", "--rate-window", "0")
	if err != nil || !strings.Contains(out, spare+",") || !strings.Contains(out, "(pinned)") {
		t.Fatalf("group list after the moves: %v\n%s", err, out)
	}

	victim := "n4"
	if c.Members[3].Node.IsLeader() {
		victim = "n3"
	}
	out, err = run(t, addr, "node", "remove", victim, "--wait")
	if err != nil || !strings.Contains(out, victim+" is draining") || !strings.Contains(out, victim+" removed: out of every group") {
		t.Fatalf("node remove --wait: %v\n%s", err, out)
	}
	out, err = run(t, addr, "--json", "node", "list")
	if err != nil {
		t.Fatal(err)
	}
	var nodes struct {
		Nodes []nodeListEntry `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes.Nodes {
		wantState := "active"
		if nd.ID == victim {
			wantState = "removed"
		}
		if nd.State != wantState || (nd.ID == victim && (len(nd.Replicas) > 0 || nd.Meta != "-")) {
			t.Errorf("node list --json: %+v, want %s", nd, wantState)
		}
	}
	out, err = run(t, addr, "node", "remove", victim)
	if err != nil || !strings.Contains(out, victim+" is removed") {
		t.Fatalf("repeated node remove: %v\n%s", err, out)
	}
}
