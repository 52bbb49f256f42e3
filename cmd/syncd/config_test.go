package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// keyValue is a secret flag's value that refuses what is not base64, as a
// gossip key would.
type keyValue struct{ s string }

func (k *keyValue) String() string { return k.s }
func (k *keyValue) Set(s string) error {
	if _, err := base64.StdEncoding.DecodeString(s); err != nil {
		return errors.New("not base64")
	}
	k.s = s
	return nil
}

var testSecret = map[string]bool{"gossip-key": true, "admin-token": true}

// testFlags has a flag of each type syncd uses, and the config flags.
func testFlags() (*flag.FlagSet, *bool) {
	fs := flag.NewFlagSet("syncd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("grpc-addr", "127.0.0.1:7400", "gRPC listen address")
	fs.Int("shards", 8, "data groups of a new cluster")
	fs.Bool("bootstrap", true, "start a new cluster if the data dir is empty")
	fs.Duration("dedupe-window", 24*time.Hour, "how long an idempotency key is remembered")
	fs.Uint64("user-retention-entries", 0, "how many entries a user timeline keeps\n(0: no limit)")
	fs.Int64("wal-segment-bytes", 64<<20, "size of the log segments")
	fs.String("device-classes", "phone,tablet", "the device classes Login accepts, comma-separated")
	fs.String("login-policy", "all", "which sessions a login ends")
	fs.String("token-file", "", "file of hashed tokens")
	fs.Var(&keyValue{}, "gossip-key", "memberlist encryption key (base64)")
	fs.String("admin-token", "", "a token that any string can be")
	fs.Bool("version", false, "print build info and exit")
	return fs, addConfigFlags(fs)
}

// writeFile writes a config file into a test's temp dir.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSettingsPrecedence: for every subset of the three sources, each
// flag takes the value of the first source present (flags, env, file),
// else its default. The winning source gives one value and every lower
// source present gives another, so any swapped order shows.
func TestSettingsPrecedence(t *testing.T) {
	type spec struct {
		name            string
		win, lose       string // as on the command line and in the environment
		winTOML, loseTO string // as in the config file
		wantWin, def    string // flag.Value.String() when won, and by default
	}
	specs := []spec{
		{"grpc-addr", "10.0.0.1:7400", "10.0.0.2:7400", `"10.0.0.1:7400"`, `"10.0.0.2:7400"`, "10.0.0.1:7400", "127.0.0.1:7400"},
		{"shards", "4", "2", `4`, `2`, "4", "8"},
		{"bootstrap", "false", "true", `false`, `true`, "false", "true"},
		{"dedupe-window", "10m", "1h", `"10m"`, `"1h"`, "10m0s", "24h0m0s"},
		{"user-retention-entries", "1000", "5", `1000`, `5`, "1000", "0"},
		{"wal-segment-bytes", "1048576", "4096", `1048576`, `4096`, "1048576", "67108864"},
		{"device-classes", "ios,android", "web", `["ios", "android"]`, `"web"`, "ios,android", "phone,tablet"},
		{"login-policy", "one-device", "all", `"one-device"`, `"all"`, "one-device", "all"},
	}
	sources := []string{"flag", "env", "file"}
	for set := 0; set < 1<<len(sources); set++ {
		var present []string
		for i, s := range sources {
			if set&(1<<i) != 0 {
				present = append(present, s)
			}
		}
		t.Run("from "+strings.Join(append(present, "default"), ","), func(t *testing.T) {
			t.Parallel()
			var args, environ []string
			var file strings.Builder
			winner := "default"
			if len(present) > 0 {
				winner = present[0]
			}
			for _, sp := range specs {
				val, tv := sp.lose, sp.loseTO
				for _, src := range present {
					if src == winner {
						val, tv = sp.win, sp.winTOML
					} else {
						val, tv = sp.lose, sp.loseTO
					}
					switch src {
					case "flag":
						args = append(args, "--"+sp.name+"="+val)
					case "env":
						environ = append(environ, envName(sp.name)+"="+val)
					case "file":
						fmt.Fprintf(&file, "%s = %s\n", sp.name, tv)
					}
				}
			}
			path := writeFile(t, "syncd.toml", file.String())
			args = append(args, "--config", path)
			fs, _ := testFlags()
			st, err := loadSettings(fs, args, environ, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			wantSource := map[string]string{"default": "default", "flag": "flag", "file": "file " + path}
			for _, sp := range specs {
				want := sp.def
				if winner != "default" {
					want = sp.wantWin
				}
				if got := fs.Lookup(sp.name).Value.String(); got != want {
					t.Errorf("--%s = %q, want %q (from %s)", sp.name, got, want, winner)
				}
				ws := wantSource[winner]
				if winner == "env" {
					ws = "env " + envName(sp.name)
				}
				if got := st.source[sp.name]; got != ws {
					t.Errorf("source of --%s = %q, want %q", sp.name, got, ws)
				}
			}
		})
	}
}

// TestSettingsEnvNames: SYNCD_ and the flag name in upper case with '_'
// for '-'; other spellings and the action flags are not read.
func TestSettingsEnvNames(t *testing.T) {
	cases := []struct {
		env          string
		flag, want   string // flag's value afterwards
		wantWarning  string
		wantNoChange bool
	}{
		{env: "SYNCD_GRPC_ADDR=0.0.0.0:7400", flag: "grpc-addr", want: "0.0.0.0:7400"},
		{env: "SYNCD_USER_RETENTION_ENTRIES=7", flag: "user-retention-entries", want: "7"},
		{env: "SYNCD_DEDUPE_WINDOW=90s", flag: "dedupe-window", want: "1m30s"},
		{env: "SYNCD_GOSSIP_KEY=a2V5", flag: "gossip-key", want: "a2V5"},
		{env: "syncd_shards=3", flag: "shards", want: "8"},
		{env: "SYNCD_shards=3", flag: "shards", want: "8", wantWarning: "did you mean SYNCD_SHARDS?"},
		{env: "SYNCD-SHARDS=3", flag: "shards", want: "8"},
		{env: "SYNCD_SHARD=3", flag: "shards", want: "8", wantWarning: "did you mean SYNCD_SHARDS?"},
		{env: "SYNCD_PRINT_CONFIG=true", flag: "print-config", want: "false"},
		{env: "SYNCD_VERSION=1.2.3", flag: "version", want: "false"},
		{env: "SYNCD_PORT=tcp://10.0.0.1:7400", flag: "grpc-addr", want: "127.0.0.1:7400"}, // Kubernetes' service variables
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			t.Parallel()
			fs, _ := testFlags()
			st, err := loadSettings(fs, nil, []string{"PATH=/bin", tc.env}, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if got := fs.Lookup(tc.flag).Value.String(); got != tc.want {
				t.Errorf("--%s = %q, want %q", tc.flag, got, tc.want)
			}
			warnings := strings.Join(st.warnings, "\n")
			if tc.wantWarning != "" && !strings.Contains(warnings, tc.wantWarning) {
				t.Errorf("warnings %q, want one saying %q", warnings, tc.wantWarning)
			}
			if tc.wantWarning == "" && warnings != "" {
				t.Errorf("unexpected warnings %q", warnings)
			}
		})
	}
}

// TestSettingsRefused: bad input from any source is a usage error that
// names the source and the setting, and a secret's value is not repeated.
func TestSettingsRefused(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		environ []string
		file    string // config file text, when not empty
		want    []string
		notWant string
	}{
		{name: "bad flag", args: []string{"--shards", "many"}, want: []string{"invalid value"}},
		{name: "unknown flag", args: []string{"--shardz", "4"}, want: []string{"not defined"}},
		{name: "bad env int", environ: []string{"SYNCD_SHARDS=many"}, want: []string{"SYNCD_SHARDS", `"many"`, "--shards"}},
		{name: "bad env bool", environ: []string{"SYNCD_BOOTSTRAP=maybe"}, want: []string{"SYNCD_BOOTSTRAP", `"maybe"`}},
		{name: "bad env duration", environ: []string{"SYNCD_DEDUPE_WINDOW=10"}, want: []string{"SYNCD_DEDUPE_WINDOW", `"10"`}},
		{name: "empty env int", environ: []string{"SYNCD_SHARDS="}, want: []string{"SYNCD_SHARDS"}},
		{name: "bad env secret", environ: []string{"SYNCD_GOSSIP_KEY=hunter2!"}, want: []string{"SYNCD_GOSSIP_KEY", "not shown", "not base64"}, notWant: "hunter2"},
		{name: "unknown keys", file: "shards = 4\nshardz = 4\ngrpc_addr = \"x\"\n",
			want: []string{"syncd.toml", `unknown key "shardz" (line 2): did you mean "shards"?`, `unknown key "grpc_addr" (line 3): did you mean "grpc-addr"?`}},
		{name: "unknown key, no near miss", file: "colour = \"blue\"\n", want: []string{`unknown key "colour" (line 1)`}, notWant: "did you mean"},
		{name: "table", file: "[syncd]\nshards = 4\n", want: []string{`unknown key "syncd"`, "top-level"}},
		{name: "action key", file: "print-config = true\n", want: []string{`unknown key "print-config"`}},
		{name: "config key", file: "config = \"other.toml\"\n", want: []string{`"config" (line 1)`, "cannot name another"}},
		{name: "bool for int", file: "shards = true\n", want: []string{`"shards" (line 1)`, "want an integer, got a boolean"}},
		{name: "int for duration", file: "\ndedupe-window = 600\n", want: []string{`"dedupe-window" (line 2)`, `"600s"`}},
		{name: "int for string", file: "grpc-addr = 7400\n", want: []string{`"grpc-addr"`, "got an integer"}},
		{name: "int for bool", file: "bootstrap = 1\n", want: []string{`"bootstrap"`, "want true or false"}},
		{name: "float for int", file: "shards = 4.5\n", want: []string{`"shards"`, "got a float"}},
		{name: "array of ints", file: "device-classes = [1, 2]\n", want: []string{`"device-classes"`, "array of strings"}},
		{name: "array with commas", file: "device-classes = [\"a,b\"]\n", want: []string{`"device-classes"`, "without commas"}},
		{name: "array for int", file: "shards = [4]\n", want: []string{`"shards"`, "got an array"}},
		{name: "date for string", file: "grpc-addr = 2026-01-02\n", want: []string{`"grpc-addr"`, "got a date-time"}},
		{name: "type checked though a flag overrides", args: []string{"--shards", "3"}, file: "shards = true\n", want: []string{`"shards"`}},
		{name: "value refused", file: "shards = \"many\"\n", want: []string{"syncd.toml", `invalid value "many" for "shards" (line 1)`}},
		{name: "negative uint", file: "user-retention-entries = -1\n", want: []string{`"user-retention-entries"`, `"-1"`}},
		{name: "bad duration string", file: "dedupe-window = \"soon\"\n", want: []string{`"dedupe-window"`, `"soon"`}},
		{name: "secret refused", file: "gossip-key = \"hunter2!\"\n", want: []string{`"gossip-key"`, "not shown"}, notWant: "hunter2"},
		{name: "redacted placeholder", file: "gossip-key = \"<redacted>\"\n", want: []string{"--gossip-key", "from file", "put the secret back"}},
		{name: "redacted placeholder by flag", args: []string{"--admin-token", "<redacted>"}, want: []string{"--admin-token", "from flag", "put the secret back"}},
		{name: "redacted placeholder by env", environ: []string{"SYNCD_ADMIN_TOKEN=<redacted>"}, want: []string{"--admin-token", "from env SYNCD_ADMIN_TOKEN", "put the secret back"}},
		{name: "parse error", file: "shards = 4\ngrpc-addr = \n", want: []string{"syncd.toml", "line 2"}},
		{name: "duplicate key", file: "shards = 4\nshards = 5\n", want: []string{"line 2"}},
		{name: "missing file", args: []string{"--config", "/nonexistent/syncd.toml"}, want: []string{"/nonexistent/syncd.toml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, "syncd.toml", tc.file)}, args...)
			}
			fs, _ := testFlags()
			_, err := loadSettings(fs, args, tc.environ, testSecret)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q says %q", err, tc.notWant)
			}
			if tc.name == "parse error" {
				var pe toml.ParseError
				if !errors.As(ue.error, &pe) || pe.Position.Line != 2 { // usageError does not unwrap
					t.Errorf("error %v: want a toml.ParseError at line 2", err)
				}
			}
		})
	}
}

// TestSettingsHelp: --help passes through as flag.ErrHelp, not a usage
// error (syncd exits 0 for it).
func TestSettingsHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		fs, _ := testFlags()
		_, err := loadSettings(fs, []string{arg}, nil, testSecret)
		if !errors.Is(err, flag.ErrHelp) || errors.As(err, new(usageError)) {
			t.Errorf("%s: got %v, want flag.ErrHelp as it is", arg, err)
		}
	}
}

// TestSettingsConfigFromEnv: SYNCD_CONFIG names the file, and --config
// beats it.
func TestSettingsConfigFromEnv(t *testing.T) {
	envFile := writeFile(t, "env.toml", "shards = 5\n")
	flagFile := writeFile(t, "flag.toml", "shards = 6\n")
	cases := []struct {
		name     string
		args     []string
		environ  []string
		wantPath string
		want     string
	}{
		{"env", nil, []string{"SYNCD_CONFIG=" + envFile}, envFile, "5"},
		{"flag over env", []string{"--config", flagFile}, []string{"SYNCD_CONFIG=" + envFile}, flagFile, "6"},
		{"none", nil, nil, "", "8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs, _ := testFlags()
			st, err := loadSettings(fs, tc.args, tc.environ, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if st.configPath != tc.wantPath {
				t.Errorf("config path %q, want %q", st.configPath, tc.wantPath)
			}
			if got := fs.Lookup("shards").Value.String(); got != tc.want {
				t.Errorf("--shards = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestPrintConfig: every setting with its usage and source, secrets
// redacted when set, the config flags left out; and the output loads back
// to the same values (a redacted secret given again by env, as it was).
func TestPrintConfig(t *testing.T) {
	cases := []struct {
		name      string
		secretEnv string // SYNCD_GOSSIP_KEY's value, "" for none
		want      []string
	}{
		{name: "secret set", secretEnv: "c2VjcmV0IGtleQ==", want: []string{
			`gossip-key = "<redacted>" # from: env SYNCD_GOSSIP_KEY`, `admin-token = "<redacted>" # from: env SYNCD_ADMIN_TOKEN`}},
		{name: "secret empty", want: []string{`gossip-key = "" # from: default`, `admin-token = "" # from: default`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := writeFile(t, "syncd.toml", "dedupe-window = \"10m\"\ndevice-classes = [\"ios\", \"android\"]\n")
			environ := []string{"SYNCD_SHARDS=4"}
			if tc.secretEnv != "" {
				environ = append(environ, "SYNCD_GOSSIP_KEY="+tc.secretEnv, "SYNCD_ADMIN_TOKEN="+tc.secretEnv)
			}
			fs, printCfg := testFlags()
			args := []string{"--print-config", "--config", cfg, "--grpc-addr", "0.0.0.0:7400",
				"--login-policy", `a "quoted" \ policy`, "--token-file", "/etc/syncd/tokens", "--user-retention-entries", "18446744073709551615"}
			st, err := loadSettings(fs, args, environ, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if !*printCfg {
				t.Fatal("--print-config not set")
			}
			var out bytes.Buffer
			if err := printConfig(&out, fs, testSecret, st.source); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			want := append([]string{
				"# gRPC listen address\ngrpc-addr = \"0.0.0.0:7400\" # from: flag\n",
				"shards = 4 # from: env SYNCD_SHARDS\n",
				"dedupe-window = \"10m0s\" # from: file " + cfg + "\n",
				"device-classes = \"ios,android\" # from: file " + cfg + "\n",
				"bootstrap = true # from: default\n",
				"token-file = \"/etc/syncd/tokens\" # from: flag\n",
				"# how many entries a user timeline keeps\n# (0: no limit)\nuser-retention-entries = \"18446744073709551615\"",
				"# config file read: " + cfg + "\n",
			}, tc.want...)
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("printed config lacks %q:\n%s", w, text)
				}
			}
			for _, no := range []string{"\nconfig =", "print-config =", "version =", "help", "c2VjcmV0"} {
				if strings.Contains(text, no) {
					t.Errorf("printed config has %q:\n%s", no, text)
				}
			}

			again, _ := testFlags()
			if _, err := loadSettings(again, []string{"--config", writeFile(t, "printed.toml", text)}, environ, testSecret); err != nil {
				t.Fatalf("printed config does not load: %v\n%s", err, text)
			}
			fs.VisitAll(func(f *flag.Flag) {
				if f.Name == configFlag || actionFlags[f.Name] {
					return
				}
				if got := again.Lookup(f.Name).Value.String(); got != f.Value.String() {
					t.Errorf("--%s loaded back as %q, want %q", f.Name, got, f.Value.String())
				}
			})
			if tc.secretEnv != "" {
				// Without the secret given again, the placeholder is refused.
				bare, _ := testFlags()
				_, err := loadSettings(bare, []string{"--config", writeFile(t, "printed.toml", text)}, nil, testSecret)
				if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--gossip-key") || !strings.Contains(err.Error(), "--admin-token") {
					t.Errorf("loading redacted secrets: got %v, want a usage error naming --gossip-key and --admin-token", err)
				}
			}
		})
	}
}
