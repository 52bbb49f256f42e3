package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func TestUpgradeView(t *testing.T) {
	node := func(id string, supported, active uint32, setMs int64) *syncv1.NodeStatusResponse {
		return &syncv1.NodeStatusResponse{NodeId: id, BinaryVersion: "v-" + id, SupportedClusterVersion: supported,
			ActiveClusterVersion: active, ActiveClusterVersionSetMs: setMs}
	}
	cases := []struct {
		name        string
		resp        *syncv1.ClusterStatusResponse
		active, fin uint32
		line        []string
	}{
		{"every node new, not finalized",
			&syncv1.ClusterStatusResponse{Nodes: []*syncv1.NodeStatusResponse{node("n1", 3, 2, 1000), node("n2", 3, 2, 1000)}},
			2, 3, []string{"cluster version 2 (since 1970-01-01T00:00:01Z)", "every node supports 3: `syncctl upgrade finalize` raises it"}},
		{"one node behind",
			&syncv1.ClusterStatusResponse{Nodes: []*syncv1.NodeStatusResponse{node("n1", 3, 2, 1000), node("n2", 2, 2, 1000)}},
			2, 2, []string{"cluster version 2 (since"}},
		{"a lagging replica: the highest active version wins",
			&syncv1.ClusterStatusResponse{Nodes: []*syncv1.NodeStatusResponse{node("n1", 3, 3, 2000), node("n2", 3, 2, 1000)}},
			3, 3, []string{"cluster version 3 (since 1970-01-01T00:00:02Z)"}},
		{"a binary older than cluster versions, a node not answering",
			&syncv1.ClusterStatusResponse{Nodes: []*syncv1.NodeStatusResponse{{NodeId: "n1"}, node("n2", 2, 1, 0)},
				Unreachable: map[string]string{"n3": "refused"}},
			1, 1, []string{"cluster version 1;", "not answering: n3"}},
	}
	for _, c := range cases {
		v := upgradeViewOf(c.resp)
		if v.ActiveVersion != c.active || v.FinalizableTo != c.fin {
			t.Errorf("%s: active %d finalizable %d, want %d %d", c.name, v.ActiveVersion, v.FinalizableTo, c.active, c.fin)
		}
		for _, want := range c.line {
			if !strings.Contains(v.line(), want) {
				t.Errorf("%s: line %q lacks %q", c.name, v.line(), want)
			}
		}
		if c.fin <= c.active && strings.Contains(v.line(), "finalize") {
			t.Errorf("%s: line %q suggests a finalize that cannot raise anything", c.name, v.line())
		}
	}
}

func TestUpgradeCommandsAgainstACluster(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	addr := strings.Join(c.Addrs(), ",")
	sup := fsm.SupportedClusterVersion()
	var v upgradeView
	// Every node's status: joiners may still be catching up on a busy machine.
	testutil.Eventually(t, 30*time.Second, func() error {
		out, err := run(t, addr, "upgrade", "status", "--json")
		if err != nil {
			return err
		}
		v = upgradeView{}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return err
		}
		if v.ActiveVersion != sup || len(v.Nodes) != 3 {
			return fmt.Errorf("upgrade status: %s", out)
		}
		for _, n := range v.Nodes {
			if n.SupportedVersion != sup || n.ActiveVersion != sup || n.BinaryVersion == "" {
				return fmt.Errorf("node %+v", n)
			}
		}
		return nil
	})
	out, err := run(t, addr, "upgrade", "status")
	if err != nil || !strings.Contains(out, "SUPPORTS") || !strings.Contains(out, "cluster version 2") {
		t.Fatalf("upgrade status: %v\n%s", err, out)
	}
	out, err = run(t, addr, "status")
	if err != nil || !strings.Contains(out, "cluster version 2") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = run(t, addr, "upgrade", "finalize")
	if err != nil || !strings.Contains(out, "cluster version already 2") {
		t.Fatalf("upgrade finalize at the newest version: %v\n%s", err, out)
	}
	_, err = run(t, addr, "upgrade", "finalize", "--version", "9")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "n1 supports 2") {
		t.Fatalf("finalize to a version no binary supports: %v (%v)", err, status.Code(err))
	}
}
