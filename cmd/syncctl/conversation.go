package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newSendCmd(g *globals) *cobra.Command {
	var from, to, key string
	payload := payloadInput{what: "message"}
	cmd := &cobra.Command{
		Use:   "send CONVERSATION (TEXT | - | --file PATH) --from USER --to USER,USER,...",
		Short: "Post TEXT (or stdin, or a file's bytes) to a conversation; it is delivered to every member's timeline and the sender's",
		Args:  rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return usageError{fmt.Errorf("--from is required")}
			}
			if to == "" {
				return usageError{fmt.Errorf("--to is required (the members the message is delivered to)")}
			}
			recipients := strings.Split(to, ",")
			data, err := payload.read(cmd, args, 1)
			if err != nil {
				return err
			}
			var resp *syncv1.SendResponse
			err = g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Send(ctx, args[0], from, recipients, data, client.AppendOptions{IdempotencyKey: key})
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Conversation string `json:"conversation"`
				Seq          uint64 `json:"seq"`
				TsMs         int64  `json:"ts_ms"`
				Deduplicated bool   `json:"deduplicated"`
				Recipients   uint32 `json:"recipients"`
				Light        bool   `json:"light"`
			}{args[0], resp.GetSeq(), resp.GetTsMs(), resp.GetDeduplicated(), resp.GetRecipients(), resp.GetLight()}
			return g.print(out, func(w io.Writer) {
				note := ""
				if out.Deduplicated {
					note = " (already sent with this key)"
				}
				if out.Light {
					note += " (light entries: members read the payload from the conversation)"
				}
				fmt.Fprintf(w, "%s seq %d at %s, delivering to %d timelines%s\n", out.Conversation, out.Seq, fmtTime(out.TsMs), out.Recipients, note)
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the sender's user timeline (it gets the message too)")
	cmd.Flags().StringVar(&to, "to", "", "comma-separated member timelines")
	cmd.Flags().StringVar(&key, "key", "", "idempotency key (a retry with the same key sends nothing)")
	payload.register(cmd)
	return cmd
}

func newHistoryCmd(g *globals) *cobra.Command {
	var before uint64
	var limit uint32
	cmd := &cobra.Command{
		Use:   "history TIMELINE",
		Short: "Print the newest entries of a timeline before a seq, oldest first (page back with --before)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.HistoryResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.History(ctx, args[0], before, limit, g.consistency())
				return err
			})
			if err != nil {
				return err
			}
			out := page{
				Timeline: args[0],
				Status:   strings.TrimPrefix(resp.GetStatus().String(), "HISTORY_STATUS_"),
				HeadSeq:  resp.GetHeadSeq(),
				Oldest:   resp.GetOldestSeq(),
				Entries:  g.entryViews(resp.GetEntries()),
			}
			return g.print(out, out.print)
		},
	}
	cmd.Flags().Uint64Var(&before, "before", 0, "return entries with seq below this (0: the newest)")
	cmd.Flags().Uint32Var(&limit, "limit", 20, "most entries to return")
	cmd.Flags().BoolVar(&g.stale, "stale", false, "read from the node asked, without a leader round trip")
	return cmd
}
