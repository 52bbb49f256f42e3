package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// ErrTokenFile: a token file that does not parse. Nothing of it is used.
var ErrTokenFile = errors.New("auth: bad token file")

// Tokens is a token file's contents: for each token's SHA-256, who it is.
// The file holds hashes only, so reading it (a backup, a config repo) gives
// no usable credential. Tokens are random (syncctl token new), so an
// unsalted fast hash is enough: there is no dictionary to try.
type Tokens struct {
	path   string
	byHash atomic.Pointer[map[[sha256.Size]byte]Identity]
}

// LoadTokens reads a token file: one token per line, "NAME ROLE SHA256HEX",
// blank lines and lines starting with # ignored.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Path is the file the tokens come from.
func (t *Tokens) Path() string { return t.path }

// Len is how many tokens are loaded.
func (t *Tokens) Len() int { return len(*t.byHash.Load()) }

// Reload reads the file again. On any error the tokens loaded before stay.
func (t *Tokens) Reload() error {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("auth: read token file: %w", err)
	}
	m, err := parseTokens(b)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrTokenFile, t.path, err)
	}
	t.byHash.Store(&m)
	return nil
}

func parseTokens(b []byte) (map[[sha256.Size]byte]Identity, error) {
	m := map[[sha256.Size]byte]Identity{}
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want NAME ROLE SHA256HEX, got %d fields", line, len(f))
		}
		role, ok := ParseRole(f[1])
		if !ok {
			return nil, fmt.Errorf("line %d: role %q: want app, reader or admin", line, f[1])
		}
		var h [sha256.Size]byte
		if n, err := hex.Decode(h[:], []byte(f[2])); err != nil || n != sha256.Size || len(f[2]) != 2*sha256.Size {
			return nil, fmt.Errorf("line %d: %q is not a hex SHA-256 (64 hex digits; the file holds hashes, not tokens)", line, f[2])
		}
		if names[f[0]] {
			return nil, fmt.Errorf("line %d: name %q appears twice", line, f[0])
		}
		if _, dup := m[h]; dup {
			return nil, fmt.Errorf("line %d: the hash of %q is another name's too", line, f[0])
		}
		names[f[0]] = true
		m[h] = Identity{Name: f[0], Role: role, Via: "token"}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// lookup finds the identity of a presented token.
func (t *Tokens) lookup(token string) (Identity, bool) {
	id, ok := (*t.byHash.Load())[sha256.Sum256([]byte(token))]
	return id, ok
}

// HashToken is the token file's hash of a token.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
