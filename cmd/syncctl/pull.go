package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

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
				Entries:  g.entryViews(resp.GetEntries()),
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

// entryView is an entry as syncctl prints it. Exactly one of payload (the
// bytes as text, when they are UTF-8) and payload_base64 (standard base64:
// other bytes, or with --base64) is set.
type entryView struct {
	Timeline        string            `json:"timeline,omitempty"`
	Seq             uint64            `json:"seq"`
	TsMs            int64             `json:"ts_ms"`
	Payload         *string           `json:"payload,omitempty"`
	PayloadBase64   *string           `json:"payload_base64,omitempty"`
	Key             string            `json:"idempotency_key,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	Sender          string            `json:"sender,omitempty"`
	Conversation    string            `json:"conversation,omitempty"`
	ConversationSeq uint64            `json:"conversation_seq,omitempty"`
	Light           bool              `json:"light,omitempty"`
}

func (g *globals) entryViews(es []*syncv1.Entry) []entryView {
	out := make([]entryView, len(es))
	for i, e := range es {
		out[i] = entryView{
			Seq: e.GetSeq(), TsMs: e.GetTsMs(), Key: e.GetIdempotencyKey(), Metadata: e.GetMetadata(),
			Sender: e.GetSender(), Conversation: e.GetConversation(), ConversationSeq: e.GetConversationSeq(), Light: e.GetLight(),
		}
		out[i].Payload, out[i].PayloadBase64 = g.bytesView(e.GetPayload())
	}
	return out
}

// bytesView renders bytes as text when they are UTF-8, else (or with
// --base64) as standard base64: JSON strings cannot carry other bytes.
func (g *globals) bytesView(b []byte) (text, b64 *string) {
	if g.base64 || !utf8.Valid(b) {
		s := base64.StdEncoding.EncodeToString(b)
		return nil, &s
	}
	s := string(b)
	return &s, nil
}

// bytesText is how a bytesView reads for people.
func bytesText(text, b64 *string) string {
	if b64 != nil {
		return "base64:" + *b64
	}
	if text != nil {
		return *text
	}
	return ""
}

func (e entryView) print(w io.Writer) {
	from := ""
	if e.Sender != "" {
		from = e.Sender + ": "
	}
	text := bytesText(e.Payload, e.PayloadBase64)
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
