package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newDeviceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Log devices in and out, list them with their cursors, acknowledge what they synced",
	}
	cmd.AddCommand(newDeviceLoginCmd(g), newDeviceLogoutCmd(g), newDeviceListCmd(g), newDeviceAckCmd(g))
	return cmd
}

// sessionJSON is a session as syncctl prints it.
type sessionJSON struct {
	Session    string            `json:"session"`
	Device     string            `json:"device"`
	Class      string            `json:"class"`
	Epoch      uint64            `json:"epoch"`
	LoginMs    int64             `json:"login_ms"`
	LastSeenMs int64             `json:"last_seen_ms"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	EndReason  string            `json:"end_reason,omitempty"`
	EndedBy    string            `json:"ended_by,omitempty"`
	EndedMs    int64             `json:"ended_ms,omitempty"`
	Cursors    []cursorJSON      `json:"cursors,omitempty"`
}

type cursorJSON struct {
	Timeline string `json:"timeline"`
	Seq      uint64 `json:"seq"`
	Head     uint64 `json:"head"`
	Lag      uint64 `json:"lag"`
}

func sessionOut(s *syncv1.Session, cs []*syncv1.Cursor) sessionJSON {
	out := sessionJSON{Session: s.GetSessionId(), Device: s.GetDeviceId(), Class: s.GetDeviceClass(), Epoch: s.GetEpoch(),
		LoginMs: s.GetLoginMs(), LastSeenMs: s.GetLastSeenMs(), Metadata: s.GetMetadata(), EndReason: s.GetEndReason(), EndedBy: s.GetEndedBy(), EndedMs: s.GetEndedMs()}
	for _, c := range cs {
		out.Cursors = append(out.Cursors, cursorJSON{c.GetTimeline(), c.GetSeq(), c.GetHead(), c.GetLag()})
	}
	return out
}

func newDeviceLoginCmd(g *globals) *cobra.Command {
	var class, session string
	cmd := &cobra.Command{
		Use:   "login USER DEVICE --class CLASS [--session S]",
		Short: "Log a device in (or reconnect its session) and print the sessions the login policy ended",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if class == "" {
				return usageError{errors.New("--class is required")}
			}
			if session == "" {
				session = rand.Text()
			}
			var resp *syncv1.LoginResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Login(ctx, args[0], args[1], class, session, nil)
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Session   sessionJSON   `json:"session"`
				Ended     []sessionJSON `json:"ended"`
				Refreshed bool          `json:"refreshed,omitempty"`
			}{Session: sessionOut(resp.GetSession(), nil), Ended: []sessionJSON{}, Refreshed: resp.GetRefreshed()}
			for _, e := range resp.GetEnded() {
				out.Ended = append(out.Ended, sessionOut(e, nil))
			}
			return g.print(out, func(w io.Writer) {
				verb := "logged in"
				if out.Refreshed {
					verb = "reconnected"
				}
				fmt.Fprintf(w, "%s %s: session %s, epoch %d\n", args[1], verb, out.Session.Session, out.Session.Epoch)
				for _, e := range out.Ended {
					fmt.Fprintf(w, "ended session %s of %s (%s): %s\n", e.Session, e.Device, e.Class, e.EndReason)
				}
			})
		},
	}
	cmd.Flags().StringVar(&class, "class", "", "the device class (phone, pad, desktop, web unless the server says otherwise)")
	cmd.Flags().StringVar(&session, "session", "", "the session id (default: a new random one); the same id again is a reconnect")
	return cmd
}

func newDeviceLogoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout USER SESSION",
		Short: "End a session",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.LogoutResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Logout(ctx, args[0], args[1])
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Session      sessionJSON `json:"session"`
				AlreadyEnded bool        `json:"already_ended,omitempty"`
			}{sessionOut(resp.GetSession(), nil), resp.GetAlreadyEnded()}
			return g.print(out, func(w io.Writer) {
				if out.AlreadyEnded {
					fmt.Fprintf(w, "session %s had ended already (%s)\n", args[1], out.Session.EndReason)
					return
				}
				fmt.Fprintf(w, "session %s of %s ended\n", args[1], out.Session.Device)
			})
		},
	}
}

func newDeviceListCmd(g *globals) *cobra.Command {
	var ended bool
	cmd := &cobra.Command{
		Use:   "list USER",
		Short: "List a user's logged-in devices: class, session, epoch, last seen, cursors and lag",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.ListDevicesResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.ListDevices(ctx, args[0], client.Linearizable)
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Epoch  uint64        `json:"epoch"`
				Active []sessionJSON `json:"active"`
				Ended  []sessionJSON `json:"ended,omitempty"`
			}{Epoch: resp.GetEpoch(), Active: []sessionJSON{}}
			for _, d := range resp.GetActive() {
				out.Active = append(out.Active, sessionOut(d.GetSession(), d.GetCursors()))
			}
			if ended {
				for _, e := range resp.GetEnded() {
					out.Ended = append(out.Ended, sessionOut(e, nil))
				}
			}
			return g.print(out, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DEVICE\tCLASS\tSESSION\tEPOCH\tLAST SEEN\tCURSORS (seq/head, lag)")
				for _, s := range out.Active {
					cursors := ""
					for _, c := range s.Cursors {
						cursors += fmt.Sprintf("%s %d/%d lag %d  ", c.Timeline, c.Seq, c.Head, c.Lag)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Device, s.Class, s.Session, s.Epoch, time.UnixMilli(s.LastSeenMs).UTC().Format(time.RFC3339), cursors)
				}
				for _, s := range out.Ended {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\tended %s\t%s by %s\n", s.Device, s.Class, s.Session, s.Epoch, time.UnixMilli(s.EndedMs).UTC().Format(time.RFC3339), s.EndReason, s.EndedBy)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&ended, "ended", false, "also list the recently ended sessions")
	return cmd
}

func newDeviceAckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ack USER DEVICE TIMELINE SEQ",
		Short: "Record how far a device has synced one of its user's timelines (never rewinds)",
		Args:  exactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[3], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("SEQ %q is not a number", args[3])}
			}
			var resp *syncv1.AckResponse
			err = g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Ack(ctx, args[0], args[1], args[2], seq)
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Timeline string `json:"timeline"`
				Seq      uint64 `json:"seq"`
				Advanced bool   `json:"advanced"`
			}{args[2], resp.GetSeq(), resp.GetAdvanced()}
			return g.print(out, func(w io.Writer) {
				note := ""
				if !out.Advanced {
					note = " (unchanged: a cursor never rewinds)"
				}
				fmt.Fprintf(w, "%s of %s at %d%s\n", out.Timeline, args[1], out.Seq, note)
			})
		},
	}
}

func newReadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "read USER CONVERSATION SEQ",
		Short: "Mark a conversation read up to SEQ for every device of the user (never rewinds)",
		Args:  exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[2], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("SEQ %q is not a number", args[2])}
			}
			var resp *syncv1.MarkReadResponse
			err = g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.MarkRead(ctx, args[0], args[1], seq)
				return err
			})
			if err != nil {
				return err
			}
			out := conversationOut(resp.GetConversation())
			out.Conversation = args[1]
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "%s read up to %d, %d unread\n", args[1], out.ReadSeq, out.Unread)
			})
		},
	}
}

type conversationJSON struct {
	Conversation string `json:"conversation"`
	LastSeq      uint64 `json:"last_seq"`
	LastSender   string `json:"last_sender"`
	LastTsMs     int64  `json:"last_ts_ms"`
	Unread       uint64 `json:"unread"`
	ReadSeq      uint64 `json:"read_seq"`
}

func conversationOut(c *syncv1.ConversationSummary) conversationJSON {
	return conversationJSON{c.GetConversation(), c.GetLastSeq(), c.GetLastSender(), c.GetLastTsMs(), c.GetUnread(), c.GetReadSeq()}
}

func newConversationsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "conversations USER",
		Short: "List a user's conversations with their last message and unread count",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := struct {
				Version       uint64             `json:"version"`
				Conversations []conversationJSON `json:"conversations"`
			}{Conversations: []conversationJSON{}}
			after := ""
			for {
				var resp *syncv1.ConversationsResponse
				err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
					resp, err = cl.Conversations(ctx, args[0], after, 1000, client.Linearizable)
					return err
				})
				if err != nil {
					return err
				}
				if after == "" {
					out.Version = resp.GetVersion()
				}
				for _, c := range resp.GetConversations() {
					out.Conversations = append(out.Conversations, conversationOut(c))
				}
				if !resp.GetMore() {
					break
				}
				after = resp.GetNextAfterKey()
			}
			return g.print(out, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CONVERSATION\tLAST SEQ\tLAST SENDER\tLAST TIME\tUNREAD\tREAD")
				for _, c := range out.Conversations {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\n", c.Conversation, c.LastSeq, c.LastSender, time.UnixMilli(c.LastTsMs).UTC().Format(time.RFC3339), c.Unread, c.ReadSeq)
				}
				tw.Flush()
			})
		},
	}
}
