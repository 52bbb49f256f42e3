package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/auth"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make bearer tokens for a node's --token-file (needs no cluster)",
	}
	cmd.AddCommand(newTokenNewCmd(g))
	return cmd
}

// tokenPrefix marks syncstore tokens, so that a leaked one is recognisable
// (secret scanners, logs).
const tokenPrefix = "sst_"

func newTokenNewCmd(g *globals) *cobra.Command {
	var name, role, appendTo string
	cmd := &cobra.Command{
		Use:   "new --name NAME --role app|reader|admin [--append FILE]",
		Short: "Print a new random token, and its token-file line (NAME ROLE SHA256HEX) on stderr or appended to FILE",
		Long: `Print a new random token on stdout: "sst_" and 32 random bytes in base64url.
Its line for a node's --token-file, "NAME ROLE SHA256HEX" (the lowercase hex
SHA-256 of the token), goes to stderr, or is appended to FILE with --append
(created 0600). The file holds only hashes; the token is printed once.
Nodes read the file again on SIGHUP.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTokenName(name); err != nil {
				return err
			}
			r, ok := auth.ParseRole(role)
			if !ok {
				return usageError{fmt.Errorf("--role %q: want app, reader or admin", role)}
			}
			token, err := newToken()
			if err != nil {
				return err
			}
			hash := auth.HashToken(token)
			line := fmt.Sprintf("%s %s %s", name, r, hash)
			// The token is printed only once its line is in the file: a
			// token the nodes will never know is of no use.
			if appendTo != "" {
				if err := appendTokenLine(appendTo, name, line); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(cmd.ErrOrStderr(), line)
			}
			out := struct {
				Name   string `json:"name"`
				Role   string `json:"role"`
				Token  string `json:"token"`
				SHA256 string `json:"sha256"`
			}{name, string(r), token, hash}
			return g.print(out, func(w io.Writer) { fmt.Fprintln(w, token) })
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "who the token is for (one word; unique in the token file)")
	cmd.Flags().StringVar(&role, "role", "", "app, reader or admin")
	cmd.Flags().StringVar(&appendTo, "append", "", "append the token's line to this token file (created 0600)")
	return cmd
}

func checkTokenName(name string) error {
	switch {
	case name == "":
		return usageError{errors.New("--name is required")}
	case strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return usageError{fmt.Errorf("--name %q: one word, without spaces or control characters", name)}
	case strings.HasPrefix(name, "#"):
		return usageError{fmt.Errorf("--name %q: a line starting with # is a comment", name)}
	}
	return nil
}

// newToken is tokenPrefix and 32 random bytes, base64url without padding.
func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// appendTokenLine appends line to the token file at path, creating it
// 0600. A name already in the file is refused, leaving it as it was: nodes
// refuse a whole file with a name twice.
func appendTokenLine(path, name, line string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	old, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("token file %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(old))
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[0] == name {
			return fmt.Errorf("token file %s: line %d has the name %q already (remove that line to replace its token)", path, n, name)
		}
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		line = "\n" + line
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		return fmt.Errorf("token file %s: %w", path, err)
	}
	return f.Close()
}
