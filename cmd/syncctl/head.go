package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newHeadCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "head TIMELINE",
		Short: "Print the newest seq of a timeline (0 if it has none)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := g.ctx()
			defer cancel()
			head, err := cl.Head(ctx, args[0], g.consistency())
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
