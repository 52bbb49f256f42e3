package server

import (
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// backupChunkBytes is the most data one BackupChunk carries.
const backupChunkBytes = 1 << 20

// BackupGroup streams the group's state from its leader (see
// node.ExportGroup). Not forwarded: a backup's bytes should not pass
// through a second node, so a follower answers UNAVAILABLE with the
// leader's address, which the Go client follows.
func (s *Server) BackupGroup(req *syncv1.BackupGroupRequest, stream syncv1.Admin_BackupGroupServer) error {
	id := shard.GroupID(req.GetGroupId())
	w := &chunkSender{stream: stream, buf: make([]byte, 0, backupChunkBytes)}
	err := s.node.ExportGroup(stream.Context(), id, w, func(applied uint64, digest string) error {
		return stream.Send(&syncv1.BackupChunk{GroupId: uint64(id), AppliedIndex: applied, Digest: digest})
	})
	if err == nil {
		err = w.flush()
	}
	return toStatus(err)
}

// chunkSender is an io.Writer sending what it is given in BackupChunks of
// at most backupChunkBytes.
type chunkSender struct {
	stream syncv1.Admin_BackupGroupServer
	buf    []byte
}

func (c *chunkSender) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(len(p), backupChunkBytes-len(c.buf))
		c.buf = append(c.buf, p[:take]...)
		p = p[take:]
		if len(c.buf) == backupChunkBytes {
			if err := c.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (c *chunkSender) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.stream.Send(&syncv1.BackupChunk{Data: c.buf})
	// grpc may still read a sent message (stats handlers): never reuse it.
	c.buf = make([]byte, 0, backupChunkBytes)
	return err
}
