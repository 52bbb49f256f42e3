package devcerts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is one file Write makes.
type File struct {
	Name string // relative to the directory
	Mode fs.FileMode
	What string // for people: what it is
	data []byte
}

// Files lists what Write writes, in order: the CA, each node, each client
// certificate, the token file and secrets, the gossip key. Keys and
// secrets are 0600, the rest 0644 (the token file holds only hashes).
func (b *Bundle) Files() []File {
	out := []File{
		{"ca.pem", 0o644, "CA certificate (--peer-ca, --client-ca, syncctl --ca)", b.CA.CertPEM},
		{"ca-key.pem", 0o600, "CA key (keep it off the nodes)", b.CA.KeyPEM},
	}
	for _, n := range b.NodeNames {
		c := b.Nodes[n]
		out = append(out,
			File{n + ".pem", 0o644, "node " + n + " certificate, server and client (--tls-cert, --peer-cert)", c.CertPEM},
			File{n + "-key.pem", 0o600, "node " + n + " key (--tls-key, --peer-key)", c.KeyPEM})
	}
	for _, r := range Roles {
		c := b.Clients[r]
		out = append(out,
			File{"client-" + r + ".pem", 0o644, "client certificate CN=" + r + " OU=" + r + " (syncctl --cert)", c.CertPEM},
			File{"client-" + r + "-key.pem", 0o600, "client " + r + " key (syncctl --key)", c.KeyPEM})
	}
	out = append(out, File{"tokens.txt", 0o644, "token file, hashed (--token-file)", b.TokenFile()})
	for _, t := range b.Tokens {
		// No trailing newline: the file is the secret, byte for byte.
		out = append(out, File{"token-" + t.Name, 0o600, "secret of token " + t.Name + ", role " + t.Role + " (syncctl --token-file)", []byte(t.Secret)})
	}
	out = append(out, File{"gossip.key", 0o600, "gossip key, base64 (--gossip-key-file, or --gossip-key \"$(cat gossip.key)\")", []byte(b.GossipKeyBase64())})
	return out
}

// Write writes Files into dir, creating dir (0755: the certificates are
// public, the keys are protected by their own modes). Without overwrite it
// refuses, before writing anything, when any of the files exists.
func (b *Bundle) Write(dir string, overwrite bool) ([]File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("devcerts: %w", err)
	}
	files := b.Files()
	if !overwrite {
		for _, f := range files {
			p := filepath.Join(dir, f.Name)
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("devcerts: %s: %w (use an empty directory, or overwrite: dev-certs -force)", p, ErrExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("devcerts: %w", err)
			}
		}
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.Name), f.data, f.Mode, overwrite); err != nil {
			return nil, fmt.Errorf("devcerts: %w", err)
		}
	}
	return files, nil
}

func writeFile(path string, data []byte, mode fs.FileMode, overwrite bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if overwrite {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, mode)
	if err != nil {
		return err
	}
	// The umask may have narrowed mode, and an overwritten file keeps its
	// old one: set it.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
