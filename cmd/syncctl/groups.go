package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "List, split and add data groups and move their leadership",
	}
	cmd.AddCommand(newGroupListCmd(g), newTransferLeaderCmd(g))
	cmd.AddCommand(groupShapeCmds(g)...)
	return cmd
}

func newReplicaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replica",
		Short: "Move a group's replicas",
	}
	cmd.AddCommand(newReplicaMoveCmd(g))
	return cmd
}

type groupListEntry struct {
	ID     uint64   `json:"id"`
	Slots  []string `json:"slots"` // half-open ranges "start-end"
	NSlots uint32   `json:"slot_count"`
	// Replicas: the map's (Replicas[0] is the preferred leader); Pinned: an
	// operator placed them.
	Replicas  []string `json:"replicas"`
	Pinned    bool     `json:"pinned,omitempty"`
	Leader    string   `json:"leader"`
	Term      uint64   `json:"term"`
	Voters    []string `json:"voters"`
	Nonvoters []string `json:"nonvoters"`
	// Entries is the leader's commit index: the size of the group's log
	// (entries committed since it was created).
	Entries uint64 `json:"entries"`
	// WriteRate is the rate of committed entries over the sampling window
	// (entries/s); -1 when not sampled.
	WriteRate float64 `json:"write_rate"`
}

// leaderView finds the group's leader of the highest term in a status.
func leaderView(st *syncv1.ClusterStatusResponse, id uint64) (string, *syncv1.GroupStatus) {
	var leader string
	var best *syncv1.GroupStatus
	for _, n := range st.GetNodes() {
		for _, gs := range n.GetGroups() {
			if gs.GetGroupId() == id && gs.GetState() == "Leader" && (best == nil || gs.GetTerm() > best.GetTerm()) {
				leader, best = n.GetNodeId(), gs
			}
		}
	}
	return leader, best
}

func groupList(s clusterSnapshot, later *syncv1.ClusterStatusResponse, window time.Duration) []groupListEntry {
	var out []groupListEntry
	for _, grp := range s.smap.GetGroups() {
		e := groupListEntry{ID: grp.GetId(), Replicas: grp.GetReplicas(), Pinned: grp.GetPinned(), Voters: []string{}, Nonvoters: []string{}, WriteRate: -1}
		for _, r := range grp.GetRanges() {
			e.Slots = append(e.Slots, fmt.Sprintf("%d-%d", r.GetStart(), r.GetEnd()))
			e.NSlots += r.GetEnd() - r.GetStart()
		}
		st := s.status
		if later != nil {
			st = later
		}
		leader, gs := leaderView(st, e.ID)
		if gs != nil {
			e.Leader, e.Term, e.Entries = leader, gs.GetTerm(), gs.GetCommitIndex()
			for _, m := range gs.GetMembers() {
				if m.GetSuffrage() == "Voter" {
					e.Voters = append(e.Voters, m.GetNodeId())
				} else {
					e.Nonvoters = append(e.Nonvoters, m.GetNodeId())
				}
			}
		}
		if _, before := leaderView(s.status, e.ID); later != nil && before != nil && gs != nil && gs.GetCommitIndex() >= before.GetCommitIndex() {
			e.WriteRate = float64(gs.GetCommitIndex()-before.GetCommitIndex()) / window.Seconds()
		}
		out = append(out, e)
	}
	return out
}

func newGroupListCmd(g *globals) *cobra.Command {
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show every data group: slots, replicas, leader, size and write rate",
		Long: `Show every data group: its slot ranges, its replicas in the shard map
(the first is the preferred leader; "pinned" when an operator placed them),
the voters and non-voters of its Raft configuration and its leader as the
leader reports them, its size as committed log entries, and its write rate:
committed entries per second over --rate-window (two status samples; 0
skips it).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s clusterSnapshot
			var later *syncv1.ClusterStatusResponse
			var took time.Duration
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				if s, err = g.snapshot(ctx, cl); err != nil || window <= 0 {
					return err
				}
				start := time.Now()
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(window):
				}
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					later, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
					took = time.Since(start)
					return err
				})
			})
			if err != nil {
				return err
			}
			v := struct {
				MapVersion uint64           `json:"shard_map_version"`
				Groups     []groupListEntry `json:"groups"`
			}{s.smap.GetVersion(), groupList(s, later, took)}
			return g.print(v, func(w io.Writer) {
				fmt.Fprintf(w, "shard map v%d, %d groups\n", v.MapVersion, len(v.Groups))
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GROUP\tSLOTS\tREPLICAS (map)\tLEADER\tVOTERS\tNON-VOTERS\tENTRIES\tWRITES/S")
				for _, e := range v.Groups {
					reps := strings.Join(e.Replicas, ",")
					if e.Pinned {
						reps += " (pinned)"
					}
					leader, rate := e.Leader, "-"
					if leader == "" {
						leader = "none"
					}
					if e.WriteRate >= 0 {
						rate = strconv.FormatFloat(e.WriteRate, 'f', 1, 64)
					}
					fmt.Fprintf(tw, "%d\t%s (%d)\t%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, strings.Join(e.Slots, " "), e.NSlots, reps, leader,
						strings.Join(e.Voters, ","), orDash(strings.Join(e.Nonvoters, ",")), e.Entries, rate)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().DurationVar(&window, "rate-window", time.Second, "sample the write rate over this long (0: do not)")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func parseGroup(arg string) (uint64, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || id == 0 {
		return 0, usageError{fmt.Errorf("group %q: want a data group id (1, 2, ...)", arg)}
	}
	return id, nil
}

func newTransferLeaderCmd(g *globals) *cobra.Command {
	var to string
	var wait bool
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "transfer-leader GROUP --to NODE",
		Short: "Make NODE the group's preferred leader (pinned: the rebalance keeps it); its leader hands over",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseGroup(args[0])
			if err != nil {
				return err
			}
			var resp *syncv1.ShardChangeResponse
			err = g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.TransferLeader(ctx, &syncv1.TransferLeaderRequest{GroupId: id, To: to})
					return err
				})
			})
			if err != nil {
				return err
			}
			return g.finishChange(id, resp, wait, waitTimeout, func(leader string, voters, nonvoters []string) (string, bool) {
				return fmt.Sprintf("group %d: leader %s, voters %s", id, orDash(leader), strings.Join(voters, ",")), leader == to
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the node to lead the group (required; it must hold a replica)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until NODE leads the group, printing progress")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", defaultWaitTimeout, "how long --wait waits")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func newReplicaMoveCmd(g *globals) *cobra.Command {
	var from, to string
	var wait bool
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "move GROUP --from NODE --to NODE",
		Short: "Move a group's replica from one node to another (add, catch up, promote, then remove; pinned)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseGroup(args[0])
			if err != nil {
				return err
			}
			var resp *syncv1.ShardChangeResponse
			err = g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.MoveReplica(ctx, &syncv1.MoveReplicaRequest{GroupId: id, From: from, To: to})
					return err
				})
			})
			if err != nil {
				return err
			}
			return g.finishChange(id, resp, wait, waitTimeout, func(leader string, voters, nonvoters []string) (string, bool) {
				line := fmt.Sprintf("group %d: leader %s, voters %s, non-voters %s", id, orDash(leader), strings.Join(voters, ","), orDash(strings.Join(nonvoters, ",")))
				return line, slices.Contains(voters, to) && !slices.Contains(voters, from) && !slices.Contains(nonvoters, from)
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the node that gives up its replica (required)")
	cmd.Flags().StringVar(&to, "to", "", "the active node that takes it (required)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the move is done, printing progress")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", defaultWaitTimeout, "how long --wait waits")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// finishChange prints an operator change and, with wait, polls the group's
// leader until done says so, printing each new state.
func (g *globals) finishChange(id uint64, resp *syncv1.ShardChangeResponse, wait bool, timeout time.Duration,
	done func(leader string, voters, nonvoters []string) (string, bool)) error {
	human := func(w io.Writer) {
		what := "written"
		if !resp.GetChanged() {
			what = "unchanged (already so)"
		}
		fmt.Fprintf(w, "group %d: replicas %s (pinned), shard map v%d %s\n", id, strings.Join(resp.GetReplicas(), ","), resp.GetMapVersion(), what)
	}
	if !wait {
		return g.print(resp, human)
	}
	if !g.json {
		human(g.out)
	}
	last := ""
	err := g.waitFor(timeout, func(ctx context.Context, cl *client.Client) (bool, error) {
		var st *syncv1.ClusterStatusResponse
		err := cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
			st, err = a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
			return err
		})
		if err != nil {
			return false, err
		}
		leader, gs := leaderView(st, id)
		var voters, nonvoters []string
		for _, m := range gs.GetMembers() {
			if m.GetSuffrage() == "Voter" {
				voters = append(voters, m.GetNodeId())
			} else {
				nonvoters = append(nonvoters, m.GetNodeId())
			}
		}
		line, ok := done(leader, voters, nonvoters)
		if line != last && !g.json {
			fmt.Fprintln(g.out, line)
		}
		last = line
		return ok, nil
	})
	if err != nil {
		return err
	}
	return g.print(resp, func(w io.Writer) { fmt.Fprintf(w, "group %d: done\n", id) })
}
