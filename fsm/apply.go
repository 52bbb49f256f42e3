package fsm

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// CommandFormat is the envelope format this binary writes and understands.
const CommandFormat = 1

// opDigestPoint labels a DigestPoint's result; ApplyBatch hashes the state
// right after it (digestpoint.go).
const opDigestPoint = "digest_point"

// Result is what applying one command returns to the proposer (through
// raft.ApplyFuture.Response). Err is set when the command was rejected; then
// nothing changed.
type Result struct {
	// Op labels the command kind (for logs and metrics).
	Op      string
	Append  *AppendResult
	Send    *SendResult
	Deliver *DeliverResult
	// Batch holds the outcome of each append of an AppendBatch, in order.
	Batch []BatchItem
	Write *WriteResult
	Copy  *CopyResult
	// Device sessions, cursors and read markers.
	Login    *LoginResult
	Logout   *LogoutResult
	Ack      *AckResult
	MarkRead *MarkReadResult
	// Slot moves: the id a MovePlan got, the target's import state after a
	// MoveImport, whether a MoveCleanup left nothing to delete.
	MoveID      uint64
	MoveImport  *fsmpb.MoveImportState
	CleanupDone bool
	// Probes: how many UpgradeProbes the group holds after one (test
	// builds).
	Probes uint64
	Err    error
}

// AppendResult is the outcome of an Append.
type AppendResult struct {
	Seq  uint64
	TsMs int64
	// Deduplicated: the idempotency key was applied before; Seq and TsMs are
	// the original ones and nothing was written.
	Deduplicated bool
}

// EncodeCommand marshals a command for the Raft log, filling in the format.
func EncodeCommand(cmd *fsmpb.Command) ([]byte, error) {
	cmd.Format = CommandFormat
	b, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return b, nil
}

// applyCommand decodes and applies one command to the group's state (root). Rejections come
// back in Result.Err; a returned error is a storage failure.
func applyCommand(root *bolt.Bucket, ch *Changes, data []byte) (*Result, error) {
	var cmd fsmpb.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return &Result{Op: "malformed", Err: fmt.Errorf("%w: %v", ErrMalformedCommand, err)}, nil
	}
	return dispatch(root, ch, &cmd)
}

// dispatch is the one place that maps a command kind to its handler.
func dispatch(root *bolt.Bucket, ch *Changes, cmd *fsmpb.Command) (*Result, error) {
	if cmd.GetFormat() != CommandFormat || (cmd.GetOp() == nil && len(cmd.ProtoReflect().GetUnknown()) > 0) {
		if cmd.GetIgnoreIfUnknown() {
			return &Result{Op: "ignored"}, nil
		}
		if cmd.GetFormat() == 0 {
			return &Result{Op: "malformed", Err: fmt.Errorf("%w: no format", ErrMalformedCommand)}, nil
		}
		// A newer leader proposed something this binary cannot apply. Going on
		// would make this replica diverge; the caller stops it until it is
		// upgraded. Only a newer binary writes such an entry: the node
		// encodes every command itself, so no request can.
		return nil, fmt.Errorf("%w: command format %d or kind unknown to this binary (knows format %d)", ErrNeedsUpgrade, cmd.GetFormat(), CommandFormat)
	}
	if err := checkCommandVersion(root, cmd); err != nil {
		return &Result{Op: CommandName(cmd), Err: rejection(err)}, storageFailure(err)
	}
	switch op := cmd.GetOp().(type) {
	case *fsmpb.Command_Append:
		res, err := applyAppend(root, ch, cmd.GetNowMs(), op.Append)
		return &Result{Op: "append", Append: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_AppendBatch:
		items, err := applyAppendBatch(root, ch, cmd.GetNowMs(), op.AppendBatch)
		return &Result{Op: "append_batch", Batch: items, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_Send:
		res, err := applySend(root, ch, cmd.GetNowMs(), op.Send)
		return &Result{Op: "send", Send: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_Deliver:
		res, err := applyDeliver(root, ch, cmd.GetNowMs(), op.Deliver)
		return &Result{Op: "deliver", Deliver: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_DeliveryDone:
		err := applyDeliveryDone(root, op.DeliveryDone)
		return &Result{Op: "delivery_done", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_RecordWrite:
		res, err := applyRecordWrite(root, ch, cmd.GetNowMs(), op.RecordWrite)
		return &Result{Op: "record_write", Write: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_CompactTombstones:
		err := applyCompactTombstones(root, op.CompactTombstones)
		return &Result{Op: "compact_tombstones", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_CopyRecords:
		res, err := applyCopyRecords(root, ch, cmd.GetNowMs(), op.CopyRecords)
		return &Result{Op: "copy_records", Copy: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_CopyDone:
		err := applyCopyDone(root, op.CopyDone)
		return &Result{Op: "copy_done", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_Login:
		res, err := applyLogin(root, ch, cmd.GetNowMs(), op.Login)
		return &Result{Op: "login", Login: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_Logout:
		res, err := applyLogout(root, ch, cmd.GetNowMs(), op.Logout)
		return &Result{Op: "logout", Logout: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_TouchDevices:
		err := applyTouchDevices(root, ch, cmd.GetNowMs(), op.TouchDevices)
		return &Result{Op: "touch_devices", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_AckCursor:
		res, err := applyAckCursor(root, ch, cmd.GetNowMs(), op.AckCursor)
		return &Result{Op: "ack_cursor", Ack: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MarkRead:
		res, err := applyMarkRead(root, ch, cmd.GetNowMs(), op.MarkRead)
		return &Result{Op: "mark_read", MarkRead: res, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MoveSource:
		err := applyMoveSource(root, op.MoveSource)
		return &Result{Op: "move_source", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MoveImport:
		st, err := applyMoveImport(root, op.MoveImport)
		return &Result{Op: "move_import", MoveImport: st, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MoveCleanup:
		done, err := applyMoveCleanup(root, op.MoveCleanup)
		return &Result{Op: "move_cleanup", CleanupDone: done, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MovePlan:
		id, err := applyMovePlan(root, cmd.GetNowMs(), op.MovePlan)
		return &Result{Op: "move_plan", MoveID: id, Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MoveUpdate:
		err := applyMoveUpdate(root, cmd.GetNowMs(), op.MoveUpdate)
		return &Result{Op: "move_update", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_MoveSwitch:
		err := applyMoveSwitch(root, cmd.GetNowMs(), op.MoveSwitch)
		return &Result{Op: "move_switch", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_DigestPoint:
		return &Result{Op: opDigestPoint}, nil
	case *fsmpb.Command_Trim:
		err := applyTrim(root, op.Trim)
		return &Result{Op: "trim", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_RegisterNode:
		err := applyRegisterNode(root, cmd.GetNowMs(), op.RegisterNode)
		return &Result{Op: "register_node", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_SetNodeState:
		err := applySetNodeState(root, cmd.GetNowMs(), op.SetNodeState)
		return &Result{Op: "set_node_state", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_SetRanges:
		err := applySetRanges(root, op.SetRanges)
		return &Result{Op: "set_ranges", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_SetShardMap:
		err := applySetShardMap(root, op.SetShardMap)
		return &Result{Op: "set_shard_map", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_SetClusterId:
		err := applySetClusterID(root, op.SetClusterId)
		return &Result{Op: "set_cluster_id", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_SetClusterVersion:
		err := applySetClusterVersion(root, cmd.GetNowMs(), op.SetClusterVersion)
		return &Result{Op: "set_cluster_version", Err: rejection(err)}, storageFailure(err)
	case *fsmpb.Command_UpgradeProbe:
		if upgradeProbe == nil {
			// What a binary that predates a kind does with it: the kind
			// exists in fsmpb for every build, but only a test build
			// applies it.
			return nil, fmt.Errorf("%w: command kind upgrade_probe unknown to this binary", ErrNeedsUpgrade)
		}
		n, err := upgradeProbe(root, op.UpgradeProbe)
		return &Result{Op: "upgrade_probe", Probes: n, Err: rejection(err)}, storageFailure(err)
	default:
		return &Result{Op: "malformed", Err: fmt.Errorf("%w: no operation", ErrMalformedCommand)}, nil
	}
}

// rejectionError marks an error as "the command was refused, state unchanged"
// as opposed to a storage failure.
type rejectionError struct{ err error }

func (r rejectionError) Error() string { return r.err.Error() }
func (r rejectionError) Unwrap() error { return r.err }

func reject(err error) error { return rejectionError{err} }

func rejection(err error) error {
	if r, ok := err.(rejectionError); ok {
		return r.err
	}
	return nil
}

func storageFailure(err error) error {
	if _, ok := err.(rejectionError); ok {
		return nil
	}
	return err
}
