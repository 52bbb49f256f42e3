package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/internal/moveinfo"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// moveFlags are the flags of the commands that start moves.
type moveFlags struct {
	detach      bool
	waitTimeout time.Duration
}

func (f *moveFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.detach, "detach", false, "return once the moves are planned (follow them with 'move list' or 'move watch')")
	cmd.Flags().DurationVar(&f.waitTimeout, "wait-timeout", time.Hour, "how long to follow the moves")
}

func newSlotsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "slots", Short: "Move hash slots between groups"}
	var to uint64
	var reason string
	var f moveFlags
	move := &cobra.Command{
		Use:   "move FIRST-LAST --to GROUP",
		Short: "Move slots FIRST..LAST (inclusive) of one group to another, online",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := parseSlotRange(args[0])
			if err != nil {
				return usageError{err}
			}
			if to == 0 {
				return usageError{errors.New("--to GROUP is required")}
			}
			var ids []uint64
			err = g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
					resp, err := a.MoveSlots(ctx, &syncv1.MoveSlotsRequest{Ranges: []*syncv1.SlotRange{{Start: r.Start, End: r.End}}, TargetGroup: to, Reason: reason})
					ids = []uint64{resp.GetMoveId()}
					return err
				})
			})
			if err != nil {
				return err
			}
			return g.followMoves(ids, f)
		},
	}
	move.Flags().Uint64Var(&to, "to", 0, "target group")
	move.Flags().StringVar(&reason, "reason", "syncctl slots move", "why (kept in the move record)")
	f.add(move)
	cmd.AddCommand(move)
	return cmd
}

// parseSlotRange reads FIRST-LAST (or one slot) as a half-open range.
func parseSlotRange(s string) (shard.Range, error) {
	first, last, found := strings.Cut(s, "-")
	if !found {
		last = first
	}
	a, err1 := strconv.ParseUint(first, 10, 16)
	b, err2 := strconv.ParseUint(last, 10, 16)
	if err1 != nil || err2 != nil || a > b || b >= shard.SlotCount {
		return shard.Range{}, fmt.Errorf("slot range %q: want FIRST-LAST with 0 <= FIRST <= LAST < %d", s, shard.SlotCount)
	}
	return shard.Range{Start: uint32(a), End: uint32(b) + 1}, nil
}

func newMoveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "move", Short: "List, follow and abort slot moves"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List every move and its phase",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			moves, err := g.listMoves()
			if err != nil {
				return err
			}
			return g.print(moves, func(w io.Writer) {
				fmt.Fprintf(w, "%-4s %-12s %-6s %-6s %-9s %10s %12s %9s %s\n", "ID", "SLOTS", "FROM", "TO", "PHASE", "RECORDS", "BYTES", "FENCED", "NOTE")
				for _, m := range moves {
					fmt.Fprintf(w, "%-4d %-12s %-6d %-6d %-9s %10d %12d %9s %s\n", m.GetId(), moveinfo.Ranges(m.GetRanges()), m.GetSourceGroup(), m.GetTargetGroup(),
						moveinfo.Phase(m), m.GetRecords(), m.GetBytes(), fencedFor(m), m.GetNote())
				}
			})
		},
	}
	abort := &cobra.Command{
		Use:   "abort ID",
		Short: "Stop a move before its switch and undo its copy",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("move id %q: %v", args[0], err)}
			}
			err = g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
					_, err := a.AbortMove(ctx, &syncv1.AbortMoveRequest{MoveId: id})
					return err
				})
			})
			if err != nil {
				return err
			}
			return g.followMoves([]uint64{id}, moveFlags{waitTimeout: time.Hour})
		},
	}
	watch := &cobra.Command{
		Use:   "watch ID...",
		Short: "Follow moves until they are done",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("give at least one move id")}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			var ids []uint64
			for _, a := range args {
				id, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return usageError{fmt.Errorf("move id %q: %v", a, err)}
				}
				ids = append(ids, id)
			}
			return g.followMoves(ids, moveFlags{waitTimeout: time.Hour})
		},
	}
	cmd.AddCommand(list, abort, watch)
	return cmd
}

// groupShapeCmds are group split and group add.
func groupShapeCmds(g *globals) []*cobra.Command {
	var fs, fa moveFlags
	split := &cobra.Command{
		Use:   "split GROUP",
		Short: "Create a group and move half of GROUP's slots to it, online",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("group %q: %v", args[0], err)}
			}
			var resp *syncv1.SplitGroupResponse
			err = g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.SplitGroup(ctx, &syncv1.SplitGroupRequest{GroupId: id})
					return err
				})
			})
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(g.out, "created group %d; moves %v\n", resp.GetGroupId(), resp.GetMoveIds())
			}
			return g.followMoves(resp.GetMoveIds(), fs)
		},
	}
	fs.add(split)
	add := &cobra.Command{
		Use:   "add N",
		Short: "Create N groups and move slots to them until groups hold an even share",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || n == 0 {
				return usageError{fmt.Errorf("group count %q: want a positive number", args[0])}
			}
			var resp *syncv1.AddGroupsResponse
			err = g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.AddGroups(ctx, &syncv1.AddGroupsRequest{Count: uint32(n)})
					return err
				})
			})
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(g.out, "created groups %v; moves %v\n", resp.GetGroupIds(), resp.GetMoveIds())
			}
			return g.followMoves(resp.GetMoveIds(), fa)
		},
	}
	fa.add(add)
	return []*cobra.Command{split, add}
}

func newRebalanceCmd(g *globals) *cobra.Command {
	var f moveFlags
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Move slots until every group holds an even share",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			var resp *syncv1.RebalanceSlotsResponse
			err := g.call(func(ctx context.Context, cl *client.Client) error {
				return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) (err error) {
					resp, err = a.RebalanceSlots(ctx, &syncv1.RebalanceSlotsRequest{})
					return err
				})
			})
			if err != nil {
				return err
			}
			if len(resp.GetMoveIds()) == 0 && !g.json {
				fmt.Fprintln(g.out, "slots are even: nothing to move")
			}
			return g.followMoves(resp.GetMoveIds(), f)
		},
	}
	f.add(cmd)
	return cmd
}

func (g *globals) listMoves() ([]*syncv1.MoveInfo, error) {
	var moves []*syncv1.MoveInfo
	err := g.call(func(ctx context.Context, cl *client.Client) error {
		return cl.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
			resp, err := a.ListMoves(ctx, &syncv1.ListMovesRequest{})
			moves = resp.GetMoves()
			return err
		})
	})
	return moves, err
}

// followMoves shows each move's progress until it is cleaned or aborted:
// a bar of bytes copied with the records and the phase when stderr is a
// terminal, else a line per phase. It fails if a move was aborted.
func (g *globals) followMoves(ids []uint64, f moveFlags) error {
	if f.detach || len(ids) == 0 {
		return g.print(map[string]any{"move_ids": ids}, func(w io.Writer) {
			if len(ids) > 0 {
				fmt.Fprintf(w, "planned moves %v\n", ids)
			}
		})
	}
	deadline := time.Now().Add(f.waitTimeout)
	var final []*syncv1.MoveInfo
	var aborted []uint64
	for _, id := range ids {
		m, err := g.followMove(id, deadline)
		if err != nil {
			return err
		}
		final = append(final, m)
		if moveinfo.Phase(m) == "aborted" {
			aborted = append(aborted, id)
		}
	}
	err := g.print(final, func(w io.Writer) {
		for _, m := range final {
			fmt.Fprintf(w, "move %d %s %d->%d: %s, %d records, %d bytes, fenced %s\n", m.GetId(), moveinfo.Ranges(m.GetRanges()),
				m.GetSourceGroup(), m.GetTargetGroup(), moveinfo.Phase(m), m.GetRecords(), m.GetBytes(), fencedFor(m))
		}
	})
	if err == nil && len(aborted) > 0 {
		err = fmt.Errorf("moves %v were aborted", aborted)
	}
	return err
}

func (g *globals) followMove(id uint64, deadline time.Time) (*syncv1.MoveInfo, error) {
	var bar *progressbar.ProgressBar
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && !g.json {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription(fmt.Sprintf("move %d", id)), progressbar.OptionSpinnerType(14), progressbar.OptionClearOnFinish())
		defer bar.Finish()
	}
	last := ""
	for {
		moves, err := g.listMoves()
		if err != nil {
			return nil, err
		}
		var m *syncv1.MoveInfo
		for _, x := range moves {
			if x.GetId() == id {
				m = x
			}
		}
		if m == nil {
			return nil, fmt.Errorf("no move %d", id)
		}
		phase := moveinfo.Phase(m)
		switch {
		case bar != nil:
			bar.Describe(fmt.Sprintf("move %d %s %d->%d %s: %d records", id, moveinfo.Ranges(m.GetRanges()), m.GetSourceGroup(), m.GetTargetGroup(), phase, m.GetRecords()))
			bar.Set64(int64(m.GetBytes()))
		case phase != last && !g.json:
			fmt.Fprintf(os.Stderr, "move %d: %s (%d records, %d bytes)\n", id, phase, m.GetRecords(), m.GetBytes())
		}
		last = phase
		if phase == "cleaned" || phase == "aborted" {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("move %d is still %s after --wait-timeout (it goes on; follow it with 'move watch %d')", id, phase, id)
		}
		time.Sleep(500 * time.Millisecond) // polling an operator's view, not synchronising a test
	}
}

func fencedFor(m *syncv1.MoveInfo) string {
	if m.GetFencedMs() == 0 || m.GetSwitchedMs() == 0 {
		return "-"
	}
	return (time.Duration(m.GetSwitchedMs()-m.GetFencedMs()) * time.Millisecond).String()
}
