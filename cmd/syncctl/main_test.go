package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/internal/testcluster"
	"github.com/syncstore/syncstore/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	g := &globals{out: &out}
	root := newRoot(g)
	root.SetArgs(append([]string{"--addr", addr}, args...))
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.Execute()
	return out.String(), err
}

// runIO runs syncctl with args (no --addr added) under ctx, with stdin,
// and returns its stdout and stderr apart.
func runIO(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(&globals{out: &out})
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	if stdin != nil {
		root.SetIn(stdin)
	}
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestCommandsAgainstACluster(t *testing.T) {
	c := testcluster.New(t, 3, nil)
	addr := strings.Join(c.Addrs(), ",")
	steps := []struct {
		args []string
		want []string // substrings of the output
	}{
		{[]string{"append", "alice", "hello"}, []string{"alice seq 1 at "}},
		{[]string{"append", "alice", "again", "--key", "k1"}, []string{"alice seq 2 at "}},
		{[]string{"append", "alice", "again", "--key", "k1"}, []string{"alice seq 2 at ", "(already appended with this key)"}},
		{[]string{"pull", "alice"}, []string{"hello", "again", "OK: head 2, oldest 1"}},
		{[]string{"pull", "alice", "--after", "1", "--limit", "1"}, []string{"again", "OK: head 2"}},
		{[]string{"pull", "alice", "--after", "0", "--limit", "1"}, []string{"hello", "MORE: head 2"}},
		{[]string{"pull", "alice", "--after", "2"}, []string{"UP_TO_DATE: head 2"}},
		{[]string{"pull", "alice", "--after", "9"}, []string{"AHEAD: head 2"}},
		{[]string{"head", "alice"}, []string{"alice head 2"}},
		{[]string{"head", "alice", "--stale"}, []string{"alice head"}},
		{[]string{"send", "room", "hi all", "--from", "bob", "--to", "alice,carol"}, []string{"room seq 1 at ", "delivering to 3 timelines"}},
		{[]string{"send", "room", "again", "--from", "bob", "--to", "alice,carol", "--key", "s1"}, []string{"room seq 2"}},
		{[]string{"send", "room", "again", "--from", "bob", "--to", "alice,carol", "--key", "s1"}, []string{"room seq 2", "(already sent with this key)"}},
		{[]string{"history", "room"}, []string{"bob: hi all", "bob: again", "END: head 2, oldest 1"}},
		{[]string{"history", "room", "--limit", "1"}, []string{"bob: again", "MORE: head 2"}},
		{[]string{"history", "room", "--before", "2"}, []string{"bob: hi all", "END"}},
		{[]string{"watch", "carol", "--count", "2"}, []string{"carol       1", "hi all  [room #1]", "again  [room #2]"}},
		{[]string{"watch", "alice", "carol", "--notify", "--count", "2"}, []string{"alice  head 4", "carol  head 2"}},
		{[]string{"status"}, []string{"meta leader n", "n1", "n2", "n3", "every group has one", "FOLLOWER LAG"}},
		{[]string{"bench", "--clients", "2", "--duration", "200ms", "--timelines", "3"}, []string{"appends/s", "p99"}},
		{[]string{"bench", "--op", "record-write", "--clients", "2", "--duration", "200ms", "--timelines", "3"}, []string{"appends/s", "p99"}},
		{[]string{"collection", "put", "friends/alice", "bob", "best friend"}, []string{"friends/alice at version 1"}},
		{[]string{"collection", "put", "friends/alice", "carol", "x", "--key", "p2"}, []string{"friends/alice at version 2"}},
		{[]string{"collection", "put", "friends/alice", "carol", "x", "--key", "p2"}, []string{"at version 2 (already applied with this key)"}},
		{[]string{"collection", "delete", "friends/alice", "carol", "--if-version", "2"}, []string{"friends/alice at version 3"}},
		{[]string{"collection", "get", "friends/alice"}, []string{"at version 3, 1 records", `bob @1 = "best friend"`}},
		{[]string{"collection", "sync", "friends/alice", "--since", "1"}, []string{"OK at version 3, 1 changes", "carol @3 deleted"}},
		{[]string{"collection", "sync", "friends/alice", "--since", "3"}, []string{"UP_TO_DATE at version 3"}},
		{[]string{"device", "login", "alice", "p1", "--class", "phone", "--session", "s1"}, []string{"p1 logged in: session s1, epoch 1"}},
		{[]string{"device", "login", "alice", "p2", "--class", "phone", "--session", "s2"}, []string{"session s2, epoch 2", "ended session s1 of p1 (phone): kicked"}},
		{[]string{"device", "login", "alice", "p2", "--class", "phone", "--session", "s2"}, []string{"p2 reconnected: session s2, epoch 2"}},
		{[]string{"device", "ack", "alice", "p2", "alice", "3"}, []string{"alice of p2 at 3"}},
		{[]string{"device", "ack", "alice", "p2", "alice", "1"}, []string{"alice of p2 at 3 (unchanged: a cursor never rewinds)"}},
		{[]string{"device", "list", "alice", "--ended"}, []string{"p2      phone  s2", "alice 3/4 lag 1", "kicked by s2"}},
		{[]string{"read", "alice", "room", "1"}, []string{"room read up to 1, 1 unread"}},
		{[]string{"conversations", "alice"}, []string{"UNREAD", "room"}},
		{[]string{"device", "logout", "alice", "s2"}, []string{"session s2 of p2 ended"}},
		{[]string{"device", "logout", "alice", "s2"}, []string{"had ended already (logout)"}},
		{[]string{"bench", "--op", "login", "--clients", "2", "--duration", "200ms", "--timelines", "3"}, []string{"appends/s", "p99"}},
		{[]string{"bench", "--op", "ack", "--clients", "2", "--duration", "200ms", "--timelines", "3"}, []string{"appends/s", "p99"}},
	}
	for _, s := range steps {
		// A leadership hand-over may still be under way just after the
		// cluster formed, so status has a few seconds to report every group
		// led; the other (not all idempotent) commands run once.
		timeout := time.Duration(0)
		if s.args[0] == "status" {
			timeout = 10 * time.Second
		}
		testutil.Eventually(t, timeout, func() error {
			out, err := run(t, addr, s.args...)
			if err != nil {
				return fmt.Errorf("%v: %v", s.args, err)
			}
			for _, w := range s.want {
				if !strings.Contains(out, w) {
					return fmt.Errorf("%v: output lacks %q:\n%s", s.args, w, out)
				}
			}
			return nil
		})
	}

	out, err := run(t, addr, "--json", "collection", "sync", "friends/alice", "--since", "0")
	if err != nil {
		t.Fatal(err)
	}
	var sync struct {
		Status  string `json:"status"`
		Version uint64 `json:"version"`
		Digest  string `json:"digest"`
		Changes []struct {
			Key     string  `json:"key"`
			Version uint64  `json:"version"`
			Value   *string `json:"value"`
			Deleted bool    `json:"deleted"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &sync); err != nil || sync.Status != "OK" || sync.Version != 3 || len(sync.Digest) != 64 ||
		len(sync.Changes) != 1 || sync.Changes[0].Key != "bob" || sync.Changes[0].Value == nil || *sync.Changes[0].Value != "best friend" {
		t.Fatalf("--json collection sync: %+v %v\n%s", sync, err, out)
	}
	if _, err := run(t, addr, "collection", "put", "friends/alice", "bob", "y", "--if-version", "9"); err == nil || !strings.Contains(err.Error(), "FailedPrecondition") {
		t.Fatalf("a failed condition: %v", err)
	}

	out, err = run(t, addr, "--json", "conversations", "alice")
	if err != nil {
		t.Fatal(err)
	}
	var convs struct {
		Conversations []conversationJSON `json:"conversations"`
	}
	if err := json.Unmarshal([]byte(out), &convs); err != nil || len(convs.Conversations) != 1 ||
		convs.Conversations[0] != (conversationJSON{Conversation: "room", LastSeq: 2, LastSender: "bob", LastTsMs: convs.Conversations[0].LastTsMs, Unread: 1, ReadSeq: 1}) {
		t.Fatalf("--json conversations: %+v %v\n%s", convs, err, out)
	}
	if _, err := run(t, addr, "device", "login", "alice", "d1", "--class", "desktop"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, addr, "device", "ack", "alice", "d1", "alice", "99"); err == nil || !strings.Contains(err.Error(), "past the head") {
		t.Fatalf("an ack past the head: %v", err)
	}

	out, err = run(t, addr, "--json", "pull", "carol")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Status  string `json:"status"`
		HeadSeq uint64 `json:"head_seq"`
		Entries []struct {
			Seq             uint64 `json:"seq"`
			Payload         string `json:"payload"`
			Sender          string `json:"sender"`
			Conversation    string `json:"conversation"`
			ConversationSeq uint64 `json:"conversation_seq"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil || page.Status != "OK" || page.HeadSeq != 2 || len(page.Entries) != 2 ||
		page.Entries[1].Payload != "again" || page.Entries[1].Sender != "bob" || page.Entries[1].Conversation != "room" || page.Entries[1].ConversationSeq != 2 {
		t.Fatalf("--json pull: %+v %v\n%s", page, err, out)
	}
}

func TestUsageErrors(t *testing.T) {
	cases := [][]string{
		{"append", "only-one-arg"},
		{"pull"},
		{"status", "extra"},
		{"pull", "x", "--limit", "not-a-number"},
		{"send", "room", "text"},                // no --from
		{"send", "room", "hi", "--from", "bob"}, // no --to
		{"frobnicate"},
		{"node", "frobnicate"},
		{"group", "split-brain", "1"},
		{"move", "abort", "not-an-id"},
		{"watch"},
		{"device", "login", "alice", "p1"}, // no --class
		{"device", "ack", "alice", "p1", "alice", "x"},
		{"read", "alice", "room"},
		{"conversations"},
	}
	for _, args := range cases {
		_, err := run(t, "127.0.0.1:1", args...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}

// TestGroupingCommandsPrintHelp: a command that only groups others,
// given no subcommand, prints its help and succeeds.
func TestGroupingCommandsPrintHelp(t *testing.T) {
	for _, args := range [][]string{{}, {"node"}, {"group"}, {"move"}} {
		out, err := run(t, "127.0.0.1:1", args...)
		if err != nil || !strings.Contains(out, "Available Commands:") {
			t.Errorf("%v: %v, output %q", args, err, out)
		}
	}
}

func TestAddrFromEnvironment(t *testing.T) {
	t.Setenv(addrEnv, "10.0.0.1:7400,10.0.0.2:7400")
	root := newRoot(&globals{out: io.Discard})
	if got := root.PersistentFlags().Lookup("addr").DefValue; got != "10.0.0.1:7400,10.0.0.2:7400" {
		t.Fatalf("--addr defaults to %q with %s set", got, addrEnv)
	}
	t.Setenv(addrEnv, "")
	if got := newRoot(&globals{out: io.Discard}).PersistentFlags().Lookup("addr").DefValue; got != "127.0.0.1:7400" {
		t.Fatalf("--addr defaults to %q without %s", got, addrEnv)
	}
}
