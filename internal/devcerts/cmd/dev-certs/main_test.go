package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	tmp := t.TempDir()
	a, b, c := filepath.Join(tmp, "a"), filepath.Join(tmp, "b"), filepath.Join(tmp, "c")
	tests := []struct {
		name      string
		args      []string
		wantErr   bool
		wantUsage bool
		wantOut   []string
		dir       string
		wantFiles []string
	}{
		{name: "defaults", args: []string{a},
			wantOut: []string{"n1-key.pem", "client-reader.pem", "tokens.txt", "gossip.key", "--join 127.0.0.1:7400", "--peer-ca", "--token-file"},
			dir:     a, wantFiles: []string{"ca.pem", "n3.pem", "token-app"}},
		{name: "named nodes and hosts", args: []string{"-hosts", "db.example,10.0.0.7", b, "x", "y"},
			wantOut: []string{"--node-id x", "--node-id y", "x-key.pem"},
			dir:     b, wantFiles: []string{"x.pem", "y-key.pem"}},
		{name: "no dir", args: nil, wantErr: true, wantUsage: true},
		{name: "bad node name", args: []string{c, "ca"}, wantErr: true, wantUsage: true},
		{name: "files exist", args: []string{a}, wantErr: true},
		{name: "files exist, forced", args: []string{"-force", a}, wantOut: []string{"ca.pem"}, dir: a, wantFiles: []string{"ca.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tt.args, &out, &errOut)
			if (err != nil) != tt.wantErr || errors.As(err, new(usageError)) != tt.wantUsage {
				t.Fatalf("run: %v, want error %v, usage error %v", err, tt.wantErr, tt.wantUsage)
			}
			for _, s := range tt.wantOut {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
			for _, f := range tt.wantFiles {
				if _, err := os.Stat(filepath.Join(tt.dir, f)); err != nil {
					t.Errorf("file %s: %v", f, err)
				}
			}
		})
	}
	if _, err := os.Stat(c); !os.IsNotExist(err) {
		t.Errorf("a refused run made %s", c)
	}
}
