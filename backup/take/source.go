package take

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/internal/moveinfo"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Source is what a backup reads from the cluster (a fake in tests).
type Source interface {
	ShardMap(ctx context.Context) (*syncv1.ShardMapResponse, error)
	Moves(ctx context.Context) ([]*syncv1.MoveInfo, error)
	ClusterID(ctx context.Context) (string, error)
	// Group streams a group's backup: a header chunk, then data chunks.
	Group(ctx context.Context, id uint64, fn func(*syncv1.BackupChunk) error) error
}

// ClusterSource reads a cluster through cl: each unary request under
// timeout; each group's stream gets startTimeout to deliver its first
// chunk (its leader hashes the group first, a pass over it), then as long
// as the data takes.
func ClusterSource(cl *client.Client, timeout, startTimeout time.Duration) Source {
	return clusterSource{cl: cl, timeout: timeout, startTimeout: startTimeout}
}

type clusterSource struct {
	cl           *client.Client
	timeout      time.Duration
	startTimeout time.Duration // for a group's first chunk
}

func (s clusterSource) admin(ctx context.Context, fn func(context.Context, syncv1.AdminClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.cl.Admin(ctx, fn)
}

func (s clusterSource) ShardMap(ctx context.Context) (m *syncv1.ShardMapResponse, err error) {
	err = s.admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		m, err = a.ShardMap(ctx, &syncv1.ShardMapRequest{})
		return err
	})
	return m, err
}

func (s clusterSource) Moves(ctx context.Context) (moves []*syncv1.MoveInfo, err error) {
	err = s.admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		resp, err := a.ListMoves(ctx, &syncv1.ListMovesRequest{})
		moves = resp.GetMoves()
		return err
	})
	return moves, err
}

func (s clusterSource) ClusterID(ctx context.Context) (id string, err error) {
	err = s.admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		st, err := a.NodeStatus(ctx, &syncv1.NodeStatusRequest{})
		id = st.GetClusterId()
		return err
	})
	return id, err
}

// Group gives the stream startTimeout to deliver its first chunk (routing
// and retries to the leader included, and the leader's digest pass), then
// as long as the data takes.
func (s clusterSource) Group(ctx context.Context, id uint64, fn func(*syncv1.BackupChunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slow := time.AfterFunc(s.startTimeout, func() {
		cancel(fmt.Errorf("group %d: its stream did not start within --start-timeout %v", id, s.startTimeout))
	})
	defer slow.Stop()
	err := s.cl.BackupGroup(ctx, id, func(c *syncv1.BackupChunk) error {
		slow.Stop()
		return fn(c)
	})
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w (%v)", cause, err)
	}
	return err
}

// mapView is what a backup checks did not change while it streamed.
type mapView struct {
	version uint64
	moves   []uint64 // every move's id, in the order listed
}

func (v mapView) String() string { return fmt.Sprintf("shard map v%d, moves %v", v.version, v.moves) }

// viewMap reads the shard map and the moves, refusing a move in flight:
// its copy may be in the target's part and not in the map, or the reverse.
func viewMap(ctx context.Context, src Source) (*syncv1.ShardMapResponse, mapView, error) {
	smap, err := src.ShardMap(ctx)
	if err != nil {
		return nil, mapView{}, fmt.Errorf("backup: read the shard map: %w", err)
	}
	if smap.GetVersion() == 0 {
		return nil, mapView{}, status.Error(codes.FailedPrecondition, "backup: the cluster has no shard map yet")
	}
	moves, err := src.Moves(ctx)
	if err != nil {
		return nil, mapView{}, fmt.Errorf("backup: list the moves: %w", err)
	}
	v := mapView{version: smap.GetVersion()}
	var busy, ids []string
	for _, m := range moves {
		v.moves = append(v.moves, m.GetId())
		if p := m.GetPhase(); p != "cleaned" && p != "aborted" {
			busy = append(busy, fmt.Sprintf("move %d (slots %s, group %d -> %d) is %s", m.GetId(), moveinfo.Ranges(m.GetRanges()), m.GetSourceGroup(), m.GetTargetGroup(), moveinfo.Phase(m)))
			ids = append(ids, fmt.Sprint(m.GetId()))
		}
	}
	if len(busy) > 0 {
		return nil, mapView{}, status.Errorf(codes.FailedPrecondition,
			"backup: %s: a backup needs the slots to stay put; wait for it to finish (syncctl move watch %s) or abort it (syncctl move abort ID)",
			strings.Join(busy, "; "), strings.Join(ids, " "))
	}
	return smap, v, nil
}
