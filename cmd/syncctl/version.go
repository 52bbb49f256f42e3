package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/internal/version"
)

// versionJSON is what syncctl version --json prints.
type versionJSON struct {
	Program   string `json:"program"`
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"time,omitempty"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print syncctl's version, VCS revision and Go version (needs no cluster)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			out := versionJSON{"syncctl", info.Version, info.Revision, info.Time, info.Modified, info.GoVersion}
			return g.print(out, func(w io.Writer) { fmt.Fprintln(w, info.String("syncctl")) })
		},
	}
}
