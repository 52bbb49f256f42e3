package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func TestToStatus(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		code       codes.Code
		leaderAddr string // of the NotLeader detail; "-" for none
	}{
		{"invalid argument", fmt.Errorf("%w: timeline id is empty", fsm.ErrInvalidArgument), codes.InvalidArgument, "-"},
		{"malformed", fsm.ErrMalformedCommand, codes.InvalidArgument, "-"},
		{"not leader, leader known", &node.NotLeaderError{LeaderID: "n2", LeaderGRPCAddr: "h:2"}, codes.Unavailable, "h:2"},
		{"not leader, wrapped", fmt.Errorf("read: %w", &node.NotLeaderError{}), codes.Unavailable, ""},
		{"leader not ready", node.ErrLeaderNotReady, codes.Unavailable, "-"},
		{"outcome unknown", fmt.Errorf("%w: leadership lost", node.ErrOutcomeUnknown), codes.Unavailable, "-"},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "-"},
		{"canceled", context.Canceled, codes.Canceled, "-"},
		{"anything else", errors.New("disk on fire"), codes.Internal, "-"},
		{"unknown node", fmt.Errorf("%w: n9 is not registered", node.ErrUnknownNode), codes.NotFound, "-"},
		{"unknown node in a refused state change", fmt.Errorf("%w: %w: n9", fsm.ErrNodeState, fsm.ErrUnknownNode), codes.NotFound, "-"},
		{"node state refused", fmt.Errorf("%w: n1 is removed", fsm.ErrNodeState), codes.FailedPrecondition, "-"},
		{"would lose quorum", fmt.Errorf("%w: group 3", node.ErrWouldLoseQuorum), codes.FailedPrecondition, "-"},
		{"last active node", node.ErrLastActiveNode, codes.FailedPrecondition, "-"},
		{"bad move", node.ErrBadMove, codes.FailedPrecondition, "-"},
		{"map changed meanwhile", fsm.ErrVersionConflict, codes.Aborted, "-"},
		{"already a status", status.Error(codes.NotFound, "x"), codes.NotFound, "-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(toStatus(tc.err))
			if st.Code() != tc.code {
				t.Fatalf("code %s, want %s", st.Code(), tc.code)
			}
			got := "-"
			for _, d := range st.Details() {
				if nl, ok := d.(*syncv1.NotLeader); ok {
					got = nl.GetLeaderAddr()
				}
			}
			if got != tc.leaderAddr {
				t.Fatalf("NotLeader detail %q, want %q", got, tc.leaderAddr)
			}
		})
	}
	if toStatus(nil) != nil {
		t.Fatal("nil error became a status")
	}
}

func TestForwardErrorNamesAnUnreachableLeader(t *testing.T) {
	nl := &node.NotLeaderError{LeaderID: "n1", LeaderGRPCAddr: "h:1"}
	st := status.Convert(forwardError(nl, status.Error(codes.Unavailable, "connection refused")))
	if st.Code() != codes.Unavailable || len(st.Details()) != 1 || st.Details()[0].(*syncv1.NotLeader).GetLeaderAddr() != "h:1" {
		t.Fatalf("got %v %v", st.Code(), st.Details())
	}
	// The leader's own answers pass through untouched.
	if code := status.Code(forwardError(nl, status.Error(codes.InvalidArgument, "bad"))); code != codes.InvalidArgument {
		t.Fatalf("got %v", code)
	}
	if forwardError(nl, nil) != nil {
		t.Fatal("success became an error")
	}
}
