package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/rpc/auth"
)

var tokenShape = regexp.MustCompile(`^sst_[A-Za-z0-9_-]{43}$`) // 32 bytes of base64url, no padding

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestTokenNew: a new token is random and well formed, and its line, on
// stderr or appended to the token file, is what a node's token file
// loader (rpc/auth) reads.
func TestTokenNew(t *testing.T) {
	out, errOut, err := runIO(t, context.Background(), nil, "token", "new", "--name", "web1", "--role", "app")
	token := strings.TrimSuffix(out, "\n")
	if err != nil || !tokenShape.MatchString(token) || errOut != "web1 app "+sha256Hex(token)+"\n" {
		t.Fatalf("token new: %v; stdout %q, stderr %q", err, out, errOut)
	}

	file := filepath.Join(t.TempDir(), "tokens.txt")
	var tokens []string
	for _, tc := range []struct{ name, role string }{{"web1", "app"}, {"ops", "ADMIN"}, {"dash", "reader"}} {
		out, errOut, err := runIO(t, context.Background(), nil, "token", "new", "--name", tc.name, "--role", tc.role, "--append", file)
		tok := strings.TrimSuffix(out, "\n")
		if err != nil || !tokenShape.MatchString(tok) || errOut != "" {
			t.Fatalf("token new --append: %v; stdout %q, stderr %q", err, out, errOut)
		}
		tokens = append(tokens, tok)
	}
	if tokens[0] == tokens[1] || tokens[1] == tokens[2] || tokens[0] == token {
		t.Fatalf("tokens repeat: %q, %q", token, tokens)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := "web1 app " + sha256Hex(tokens[0]) + "\nops admin " + sha256Hex(tokens[1]) + "\ndash reader " + sha256Hex(tokens[2]) + "\n"
	if string(b) != want {
		t.Fatalf("the token file holds\n%s\nwant\n%s", b, want)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the token file's mode: %v, %v", fi.Mode(), err)
	}
	loaded, err := auth.LoadTokens(file)
	if err != nil || loaded.Len() != 3 {
		t.Fatalf("rpc/auth reads the file as %v, %v", loaded, err)
	}
	if out, err := run(t, "127.0.0.1:1", "--json", "token", "new", "--name", "x", "--role", "reader"); err != nil ||
		!strings.Contains(out, `"token": "sst_`) || !strings.Contains(out, `"role": "reader"`) {
		t.Fatalf("token new --json: %v\n%s", err, out)
	}
}

// TestTokenNewRefusals: bad names and roles are bad usage, a name already
// in the file is refused; neither prints a token nor changes the file.
func TestTokenNewRefusals(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens.txt")
	before := "# tokens\nweb1 app " + sha256Hex("x") // no newline at the end
	if err := os.WriteFile(file, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		want  string
		usage bool
	}{
		{[]string{"--role", "app"}, "--name is required", true},
		{[]string{"--name", "a b", "--role", "app"}, "one word", true},
		{[]string{"--name", "#x", "--role", "app"}, "comment", true},
		{[]string{"--name", "a", "--role", "peer"}, "want app, reader or admin", true},
		{[]string{"--name", "a"}, "want app, reader or admin", true},
		{[]string{"--name", "web1", "--role", "reader"}, `has the name "web1" already`, false},
		{[]string{"--name", "a", "--role", "app", "--append", filepath.Join(file, "sub")}, "token file", false},
	} {
		args := append([]string{"token", "new", "--append", file}, tc.args...)
		out, _, err := runIO(t, context.Background(), nil, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, new(usageError)) != tc.usage || out != "" {
			t.Errorf("%v: %v, stdout %q; want %q, usage error %t, no token", tc.args, err, out, tc.want, tc.usage)
		}
	}
	if b, _ := os.ReadFile(file); string(b) != before {
		t.Fatalf("the file changed:\n%s", b)
	}
	out, _, err := runIO(t, context.Background(), nil, "token", "new", "--name", "web2", "--role", "app", "--append", file)
	if b, _ := os.ReadFile(file); err != nil || string(b) != before+"\nweb2 app "+sha256Hex(strings.TrimSpace(out))+"\n" {
		t.Fatalf("appending after a last line without newline: %v\n%s", err, b)
	}
}
