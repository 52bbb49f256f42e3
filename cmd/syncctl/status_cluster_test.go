package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// status shows the cluster id of the node that answered, as a line of its
// own and as cluster_id in JSON.
func TestStatusShowsTheClusterID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		line string
	}{
		{"an id", "0123456789abcdef0123456789abcdef", "cluster 0123456789abcdef0123456789abcdef\n"},
		{"none yet", "", "cluster (none yet: made before cluster ids)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self := member("n1", replica(1, "Leader", 2, 5, 5, 5, "n1"))
			self.ClusterId = tt.id
			v := statusView(&syncv1.ClusterStatusResponse{ServedBy: "n1", LeaderId: "n1", Nodes: []*syncv1.NodeStatusResponse{self}})
			var out strings.Builder
			printStatus(&out, v)
			if !strings.HasPrefix(out.String(), tt.line) {
				t.Fatalf("status begins %q, want %q", out.String(), tt.line)
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				ClusterID *string `json:"cluster_id"`
			}
			if err := json.Unmarshal(b, &got); err != nil || got.ClusterID == nil || *got.ClusterID != tt.id {
				t.Fatalf("JSON %s has cluster_id %v", b, got.ClusterID)
			}
		})
	}
}
