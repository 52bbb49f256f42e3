package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newWatchCmd(g *globals) *cobra.Command {
	var after uint64
	var notify bool
	var count int
	cmd := &cobra.Command{
		Use:   "watch TIMELINE...",
		Short: "Subscribe to timelines and print each entry as it arrives (until interrupted)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("name at least one timeline")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return watch(ctx, g, cl, args, after, notify, count)
		},
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "start after this seq in every timeline (0: from the oldest kept)")
	cmd.Flags().BoolVar(&notify, "notify", false, "print only the new head of each timeline, not the entries")
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many events (0: run until interrupted)")
	return cmd
}

func watch(ctx context.Context, g *globals, cl *client.Client, timelines []string, after uint64, notify bool, count int) error {
	sub, err := cl.Subscribe(ctx, client.SubscribeOptions{NotifyOnly: notify})
	if err != nil {
		return err
	}
	defer sub.Close()
	for _, tl := range timelines {
		if err := sub.Add(tl, after); err != nil {
			return usageError{err}
		}
	}
	enc := json.NewEncoder(g.out)
	for seen := 0; count == 0 || seen < count; seen++ {
		var ev client.Event
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-sub.Events():
			if !ok {
				return sub.Err()
			}
			ev = e
		}
		switch {
		case ev.Reset:
			if g.json {
				_ = enc.Encode(map[string]any{"timeline": ev.Timeline, "reset": true, "oldest_seq": ev.OldestSeq})
			} else {
				fmt.Fprintf(g.out, "%s  reset: entries before %d were trimmed\n", ev.Timeline, ev.OldestSeq)
			}
		case ev.Entry != nil:
			v := g.entryViews([]*syncv1.Entry{ev.Entry})[0]
			v.Timeline = ev.Timeline
			if g.json {
				_ = enc.Encode(v)
			} else {
				v.print(g.out)
			}
		default:
			if g.json {
				_ = enc.Encode(map[string]any{"timeline": ev.Timeline, "head_seq": ev.Head})
			} else {
				fmt.Fprintf(g.out, "%s  head %d\n", ev.Timeline, ev.Head)
			}
		}
	}
	return nil
}
