package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newPullCmd(g *globals) *cobra.Command {
	var after uint64
	var limit uint32
	cmd := &cobra.Command{
		Use:   "pull TIMELINE",
		Short: "Print the entries of a timeline after a seq",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.PullResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Pull(ctx, args[0], after, limit, g.consistency())
				return err
			})
			if err != nil {
				return err
			}
			out := page{
				Timeline: args[0],
				Status:   strings.TrimPrefix(resp.GetStatus().String(), "PULL_STATUS_"),
				HeadSeq:  resp.GetHeadSeq(),
				Oldest:   resp.GetOldestSeq(),
				Entries:  entryViews(resp.GetEntries()),
			}
			return g.print(out, out.print)
		},
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "return entries with seq greater than this")
	cmd.Flags().Uint32Var(&limit, "limit", 100, "most entries to return")
	cmd.Flags().BoolVar(&g.stale, "stale", false, "read from the node asked, without a leader round trip")
	return cmd
}

// page is how pull and history print a page of entries.
type page struct {
	Timeline string      `json:"timeline"`
	Status   string      `json:"status"`
	HeadSeq  uint64      `json:"head_seq"`
	Oldest   uint64      `json:"oldest_seq"`
	Entries  []entryView `json:"entries"`
}

func (p page) print(w io.Writer) {
	for _, e := range p.Entries {
		e.print(w)
	}
	fmt.Fprintf(w, "%s: head %d, oldest %d\n", p.Status, p.HeadSeq, p.Oldest)
}

type entryView struct {
	Timeline        string            `json:"timeline,omitempty"`
	Seq             uint64            `json:"seq"`
	TsMs            int64             `json:"ts_ms"`
	Payload         string            `json:"payload"`
	Key             string            `json:"idempotency_key,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	Sender          string            `json:"sender,omitempty"`
	Conversation    string            `json:"conversation,omitempty"`
	ConversationSeq uint64            `json:"conversation_seq,omitempty"`
	Light           bool              `json:"light,omitempty"`
}

func entryViews(es []*syncv1.Entry) []entryView {
	out := make([]entryView, len(es))
	for i, e := range es {
		out[i] = entryView{
			Seq: e.GetSeq(), TsMs: e.GetTsMs(), Payload: string(e.GetPayload()), Key: e.GetIdempotencyKey(), Metadata: e.GetMetadata(),
			Sender: e.GetSender(), Conversation: e.GetConversation(), ConversationSeq: e.GetConversationSeq(), Light: e.GetLight(),
		}
	}
	return out
}

func (e entryView) print(w io.Writer) {
	from := ""
	if e.Sender != "" {
		from = e.Sender + ": "
	}
	text := e.Payload
	if e.Light {
		text = "(light entry: read the conversation)"
	}
	if e.Conversation != "" {
		text = fmt.Sprintf("%s  [%s #%d]", text, e.Conversation, e.ConversationSeq)
	}
	prefix := ""
	if e.Timeline != "" {
		prefix = e.Timeline + "  "
	}
	fmt.Fprintf(w, "%s%6d  %s  %s%s\n", prefix, e.Seq, fmtTime(e.TsMs), from, text)
}

func fmtTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}
