package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/syncstore/syncstore/internal/durable"
)

// dataDirLayout is the version of a data dir's layout this binary writes:
//
//	LAYOUT                 this number
//	storage/log.db         the Raft logs and stable stores of the data groups
//	storage/state.db       every group's state (storage package)
//	meta/raft.db           the meta group's Raft log and stable store
//	meta/snapshots/        the meta group's snapshots
//	groups/<id>/snapshots/ each data group's snapshots
//
// Layout 1 (before the node-wide storage engine, no LAYOUT file) kept a
// state.db and a raft.db in every group's directory.
const dataDirLayout = "2"

const layoutFile = "LAYOUT"

// ErrDataDirLayout is returned by Start for a data dir this binary cannot
// use as it stands.
var ErrDataDirLayout = errors.New("data dir layout")

// checkLayout refuses a data dir of another layout, and marks a new one.
func checkLayout(dataDir string) error {
	b, err := os.ReadFile(filepath.Join(dataDir, layoutFile))
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != dataDirLayout {
			return fmt.Errorf("%w: %s has layout %q; this binary uses layout %s: run the binary that wrote it", ErrDataDirLayout, dataDir, got, dataDirLayout)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("node: read %s: %w", layoutFile, err)
	}
	old, _ := filepath.Glob(filepath.Join(dataDir, "groups", "*", "state.db"))
	if _, err := os.Stat(filepath.Join(dataDir, "meta", "state.db")); err == nil {
		old = append(old, filepath.Join(dataDir, "meta", "state.db"))
	}
	if len(old) > 0 {
		return fmt.Errorf("%w: %s was written by a syncd before the node-wide storage engine (layout 1: a state file per group, such as %s); "+
			"this binary uses layout %s and does not convert it. Either run the previous binary on it, or start this node on a new, empty "+
			"data dir under a new node id and join it to the cluster (its replicas come from their peers); the old dir is left untouched",
			ErrDataDirLayout, dataDir, old[0], dataDirLayout)
	}
	if err := durable.WriteFile(filepath.Join(dataDir, layoutFile), []byte(dataDirLayout+"\n")); err != nil {
		return fmt.Errorf("node: write %s: %w", layoutFile, err)
	}
	return nil
}
