package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/backup/take"
)

// TestBackupProgressBar: the bar (given a writer, as a terminal's stderr
// would be) names the parts done of all and the rate of the bytes
// written, as a backup drives it (backup/take tests the order of the
// calls).
func TestBackupProgressBar(t *testing.T) {
	var buf bytes.Buffer
	var p take.Progress = &barProgress{w: &buf}
	p.Start(3)
	for i, name := range []string{backup.MetaPartName, backup.GroupPartName(1), backup.GroupPartName(2)} {
		p.Group(name)
		p.Bytes(int64(i+1) << 21)
		p.PartDone()
	}
	p.Finish()
	if s := buf.String(); !strings.Contains(s, "backup: 0/3 parts done, meta") || !strings.Contains(s, "/3 parts done, group-") || !strings.Contains(s, "B/s)") {
		t.Fatalf("bar: %q", s)
	}
	// Not a terminal, or --json: no bar.
	if _, ok := (&globals{}).backupProgress(&buf).(take.NoProgress); !ok {
		t.Fatal("a bar on a buffer")
	}
}
