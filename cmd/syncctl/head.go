package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
)

func newHeadCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "head TIMELINE",
		Short: "Print the newest seq of a timeline (0 if it has none)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var head uint64
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				head, err = cl.Head(ctx, args[0], g.consistency())
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Timeline string `json:"timeline"`
				HeadSeq  uint64 `json:"head_seq"`
			}{args[0], head}
			return g.print(out, func(w io.Writer) { fmt.Fprintf(w, "%s head %d\n", out.Timeline, out.HeadSeq) })
		},
	}
	cmd.Flags().BoolVar(&g.stale, "stale", false, "read from the node asked, without a leader round trip")
	return cmd
}
