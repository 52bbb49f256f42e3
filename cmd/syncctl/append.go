package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newAppendCmd(g *globals) *cobra.Command {
	var key string
	payload := payloadInput{what: "payload"}
	cmd := &cobra.Command{
		Use:   "append TIMELINE (TEXT | - | --file PATH)",
		Short: "Append TEXT (or stdin, or a file's bytes) to a timeline and print the seq it got",
		Args:  rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := payload.read(cmd, args, 1)
			if err != nil {
				return err
			}
			var resp *syncv1.AppendResponse
			err = g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Append(ctx, args[0], data, client.AppendOptions{IdempotencyKey: key})
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Timeline     string `json:"timeline"`
				Seq          uint64 `json:"seq"`
				TsMs         int64  `json:"ts_ms"`
				Deduplicated bool   `json:"deduplicated"`
			}{args[0], resp.GetSeq(), resp.GetTsMs(), resp.GetDeduplicated()}
			return g.print(out, func(w io.Writer) {
				note := ""
				if out.Deduplicated {
					note = " (already appended with this key)"
				}
				fmt.Fprintf(w, "%s seq %d at %s%s\n", out.Timeline, out.Seq, fmtTime(out.TsMs), note)
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "idempotency key (a retry with the same key appends nothing)")
	payload.register(cmd)
	return cmd
}
