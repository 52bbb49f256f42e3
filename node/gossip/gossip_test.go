package gossip

import (
	"slices"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/shard"
)

func groups(n int) []shard.GroupID {
	var out []shard.GroupID
	for i := range n {
		out = append(out, shard.GroupID(i+1))
	}
	return out
}

func TestGossipMetaRoundTripsAndFitsTheLimit(t *testing.T) {
	cases := []struct {
		name                 string
		meta                 gossipMeta
		limit                int
		wantLeads, wantHosts int
	}{
		{"empty", gossipMeta{}, 512, 0, 0},
		{"small", gossipMeta{grpcAddr: "10.0.0.1:7400", raftAddr: "10.0.0.1:7401", hosts: groups(8), leads: groups(3)}, 512, 3, 8},
		{"with a cluster id", gossipMeta{grpcAddr: "h:1", raftAddr: "h:2", hosts: groups(8), leads: groups(3), clusterID: strings.Repeat("c", 64)}, 512, 3, 8},
		{"hosts cut first", gossipMeta{grpcAddr: "h:1", raftAddr: "h:2", hosts: groups(400), leads: groups(100), clusterID: "c1"}, 512, 100, 0},
		{"leads cut too", gossipMeta{grpcAddr: "h:1", raftAddr: "h:2", hosts: groups(400), leads: groups(400), clusterID: strings.Repeat("c", 64)}, 512, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.meta.encode(tc.limit)
			if len(b) > tc.limit {
				t.Fatalf("encoded %d bytes, limit %d", len(b), tc.limit)
			}
			got, err := decodeGossipMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.grpcAddr != tc.meta.grpcAddr || got.raftAddr != tc.meta.raftAddr {
				t.Fatalf("addresses %q %q", got.grpcAddr, got.raftAddr)
			}
			if got.clusterID != tc.meta.clusterID || !got.knowsClusterID {
				t.Fatalf("cluster id %q (field there: %v), want %q", got.clusterID, got.knowsClusterID, tc.meta.clusterID)
			}
			if tc.wantLeads > 0 && (len(got.leads) < tc.wantLeads || !slices.Equal(got.leads, tc.meta.leads[:len(got.leads)])) {
				t.Fatalf("leads %v", got.leads)
			}
			if tc.wantHosts > 0 && !slices.Equal(got.hosts, tc.meta.hosts[:tc.wantHosts]) {
				t.Fatalf("hosts %v", got.hosts)
			}
		})
	}
	if _, err := decodeGossipMeta([]byte{0xff, 0xff}); err == nil {
		t.Fatal("garbage decoded")
	}
	// A binary older than cluster ids ends its meta after the hosted groups.
	old := appendGroups(appendGroups(appendGroups(appendString(appendString(nil, "h:1"), "h:2"), nil), groups(2)), groups(3))
	got, err := decodeGossipMeta(old)
	if err != nil || got.knowsClusterID || got.clusterID != "" || !slices.Equal(got.hosts, groups(3)) {
		t.Fatalf("an older meta decoded as %+v, %v", got, err)
	}
}
