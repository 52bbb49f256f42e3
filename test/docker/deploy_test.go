package docker

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExampleConfigLoads runs syncd --print-config on deploy/syncd.toml (no
// Docker needed): every key of the example must be a flag syncd takes, and
// its value syncd's, so the example cannot drift from the flags.
func TestExampleConfigLoads(t *testing.T) {
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "syncd")
	// The image's build flags: the compiled packages are shared with
	// scripts/docker-build.sh's build in the cache, on a cold one too.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/syncd")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/syncd: %v\n%s", err, out)
	}
	example := filepath.Join(root, "deploy", "syncd.toml")
	cmd := exec.CommandContext(ctx, bin, "--config", example, "--print-config")
	cmd.Env = withoutSyncdEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("syncd --config deploy/syncd.toml --print-config: %v\n%s", err, out)
	}
	keys := exampleKeys(t, example)
	if len(keys) < 10 {
		t.Fatalf("deploy/syncd.toml sets %d keys; the parse of the example is broken", len(keys))
	}
	printed := map[string]string{} // key -> its line
	for _, line := range strings.Split(string(out), "\n") {
		if k, _, ok := strings.Cut(line, " = "); ok && !strings.HasPrefix(line, "#") {
			printed[k] = line
		}
	}
	for _, k := range keys {
		if !strings.HasSuffix(printed[k], "# from: file "+example) {
			t.Errorf("--print-config shows %q as %q, want it from the file", k, printed[k])
		}
	}
}

// exampleKeys are the keys the example sets (not those commented out).
func exampleKeys(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY = VALUE", path, line)
		}
		keys = append(keys, strings.TrimSpace(k))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// withoutSyncdEnv drops SYNCD_* variables, which would win over the file.
func withoutSyncdEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SYNCD_") {
			out = append(out, kv)
		}
	}
	return out
}
