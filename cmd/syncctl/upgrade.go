package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newUpgradeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Rolling upgrades: each node's binary and cluster versions, and raising the cluster's",
		Long: `Rolling upgrades. A cluster of mixed binaries runs at its active cluster
version, and new binaries propose nothing the old ones cannot apply. Replace
the nodes one at a time (stop, start the new binary on the same data dir),
check with "upgrade status" that every node runs it, then "upgrade finalize".
After a finalize, a binary too old for the new version refuses to start.`,
	}
	cmd.AddCommand(newUpgradeStatusCmd(g), newUpgradeFinalizeCmd(g))
	return cmd
}

// upgradeNode is one node in `upgrade status`.
type upgradeNode struct {
	ID            string `json:"id"`
	BinaryVersion string `json:"binary_version,omitempty"`
	// SupportedVersion is the newest cluster version the node's binary
	// supports (1 for a binary older than cluster versions).
	SupportedVersion uint32 `json:"supported_version,omitempty"`
	// ActiveVersion is the cluster's version as the node's meta replica has
	// it.
	ActiveVersion uint32 `json:"active_version,omitempty"`
	Error         string `json:"error,omitempty"`
}

// upgradeView is the cluster's versions.
type upgradeView struct {
	// ActiveVersion is the cluster's active version (the highest any
	// node's meta replica has applied); ActiveSince when it was set, ""
	// for a cluster made before cluster versions.
	ActiveVersion uint32 `json:"active_version"`
	ActiveSince   string `json:"active_since,omitempty"`
	// FinalizableTo is the version every node answering supports; a
	// finalize raises the active version to it only when no node is
	// unreachable (Blocked says why not).
	FinalizableTo uint32        `json:"finalizable_to"`
	Blocked       string        `json:"blocked,omitempty"`
	Nodes         []upgradeNode `json:"nodes"`
}

func upgradeViewOf(resp *syncv1.ClusterStatusResponse) upgradeView {
	var v upgradeView
	var setMs int64
	for _, n := range resp.GetNodes() {
		sup := max(n.GetSupportedClusterVersion(), 1)
		active := max(n.GetActiveClusterVersion(), 1)
		if active > v.ActiveVersion || (active == v.ActiveVersion && n.GetActiveClusterVersionSetMs() > setMs) {
			v.ActiveVersion, setMs = active, n.GetActiveClusterVersionSetMs()
		}
		if v.FinalizableTo == 0 || sup < v.FinalizableTo {
			v.FinalizableTo = sup
		}
		bin := n.GetBinaryVersion()
		if bin == "" {
			bin = "(older than cluster versions)"
		}
		v.Nodes = append(v.Nodes, upgradeNode{ID: n.GetNodeId(), BinaryVersion: bin, SupportedVersion: sup, ActiveVersion: active})
	}
	var unreachable []string
	for id, e := range resp.GetUnreachable() {
		v.Nodes = append(v.Nodes, upgradeNode{ID: id, Error: e})
		unreachable = append(unreachable, id)
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	if setMs > 0 {
		v.ActiveSince = time.UnixMilli(setMs).UTC().Format(time.RFC3339)
	}
	if len(unreachable) > 0 {
		slices.Sort(unreachable)
		v.Blocked = "not answering: " + strings.Join(unreachable, ", ")
	}
	return v
}

// line is the one-line summary `status` prints.
func (v upgradeView) line() string {
	s := fmt.Sprintf("cluster version %d", v.ActiveVersion)
	if v.ActiveSince != "" {
		s += " (since " + v.ActiveSince + ")"
	}
	switch {
	case v.Blocked != "":
		s += "; cannot tell what every node supports: " + v.Blocked
	case v.FinalizableTo > v.ActiveVersion:
		s += fmt.Sprintf("; every node supports %d: `syncctl upgrade finalize` raises it", v.FinalizableTo)
	}
	return s
}

func printUpgrade(w io.Writer, v upgradeView) {
	fmt.Fprintln(w, v.line())
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBINARY\tSUPPORTS\tACTIVE (its view)")
	for _, n := range v.Nodes {
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\t\t\t(%s)\n", n.ID, n.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", n.ID, n.BinaryVersion, n.SupportedVersion, n.ActiveVersion)
	}
	tw.Flush()
}

func newUpgradeStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each node's binary and the cluster versions it supports, and the cluster's active version",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.ClusterStatusResponse
			err := g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
					return err
				})
			})
			if err != nil {
				return err
			}
			v := upgradeViewOf(resp)
			return g.print(v, func(w io.Writer) { printUpgrade(w, v) })
		},
	}
}

type finalizeResult struct {
	ActiveVersion uint32 `json:"active_version"`
	Changed       bool   `json:"changed"`
}

func newUpgradeFinalizeCmd(g *globals) *cobra.Command {
	var version uint32
	cmd := &cobra.Command{
		Use:   "finalize",
		Short: "Raise the cluster's active version once every node runs a binary that supports it",
		Long: `Raise the cluster's active version (by default to the newest the answering
node's binary supports). Refused, naming them, while a registered node that is
neither removed nor declared dead runs an older binary or does not answer.
Afterwards the new commands are proposed, and an older binary refuses to
start.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.FinalizeUpgradeResponse
			err := g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.FinalizeUpgrade(ctx, &syncv1.FinalizeUpgradeRequest{Version: version})
					return err
				})
			})
			if err != nil {
				return err
			}
			r := finalizeResult{ActiveVersion: resp.GetActiveVersion(), Changed: resp.GetChanged()}
			return g.print(r, func(w io.Writer) {
				if r.Changed {
					fmt.Fprintf(w, "cluster version raised to %d\n", r.ActiveVersion)
				} else {
					fmt.Fprintf(w, "cluster version already %d\n", r.ActiveVersion)
				}
			})
		},
	}
	cmd.Flags().Uint32Var(&version, "version", 0, "the cluster version to raise to (0: the newest the answering node's binary supports)")
	return cmd
}
