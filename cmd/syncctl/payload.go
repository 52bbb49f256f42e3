package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// maxPayloadRead bounds a payload read from a file or stdin:
// fsm.MaxPayloadBytes, the most any node can be set to take.
const maxPayloadRead = 16 << 20

// payloadInput is where a command's payload (or record value) comes from:
// its argument, stdin when the argument is "-", or --file. Argv cannot
// carry megabytes ("Argument list too long") nor every byte.
type payloadInput struct {
	what string // "payload", "value": for messages
	file string
}

func (p *payloadInput) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.file, "file", "", "read the "+p.what+" from this file instead of the argument (\"-\": stdin)")
}

// read returns the payload: args[i] when given ("-" reads stdin), else
// --file's contents.
func (p *payloadInput) read(cmd *cobra.Command, args []string, i int) ([]byte, error) {
	switch {
	case len(args) > i && p.file != "":
		return nil, usageError{fmt.Errorf("give the %s as an argument or with --file, not both", p.what)}
	case len(args) > i && args[i] == "-":
		return readPayload(cmd.InOrStdin(), "stdin")
	case len(args) > i:
		return []byte(args[i]), nil
	case p.file == "":
		return nil, usageError{fmt.Errorf("give the %s: as an argument, - to read stdin, or --file PATH", p.what)}
	case p.file == "-":
		return readPayload(cmd.InOrStdin(), "stdin")
	}
	f, err := os.Open(p.file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.what, err)
	}
	defer f.Close()
	return readPayload(f, p.file)
}

func readPayload(r io.Reader, from string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPayloadRead+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", from, err)
	}
	if len(b) > maxPayloadRead {
		return nil, fmt.Errorf("%s holds over %d bytes, more than any node takes", from, maxPayloadRead)
	}
	return b, nil
}

// rangeArgs is cobra.RangeArgs as a usage error.
func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(lo, hi)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
