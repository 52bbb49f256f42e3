package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Settings come from four places; the first that sets a flag wins:
// the command line, then SYNCD_* environment variables, then the
// --config file (TOML whose keys are the flag names), then the defaults.
// This file works on any *flag.FlagSet so that main only defines flags.

const (
	configFlag      = "config"
	printConfigFlag = "print-config"
	envPrefix       = "SYNCD_"
	// redacted stands for a secret in --print-config's output. A secret
	// flag left with it is refused, so that a printed config loaded again
	// does not silently run with the placeholder as its key.
	redacted = "<redacted>"
)

// actionFlags do something instead of configuring the node: they are
// taken from the command line only (an image may well set SYNCD_VERSION
// as metadata) and are not part of the printed config.
var actionFlags = map[string]bool{printConfigFlag: true, "version": true, "help": true, "h": true}

// addConfigFlags defines --config and --print-config on fs, and returns
// --print-config's value.
func addConfigFlags(fs *flag.FlagSet) (printCfg *bool) {
	fs.String(configFlag, "", "read settings from this TOML file (keys are flag names); flags and "+envPrefix+"* environment variables override it")
	return fs.Bool(printConfigFlag, false, "print the effective settings as TOML (secrets redacted), loadable with --config, and exit")
}

// settings is what loadSettings found out besides the flag values.
type settings struct {
	configPath string            // the config file read, "" for none
	source     map[string]string // flag name → "flag", "env SYNCD_X", "file PATH" or "default"
	warnings   []string          // SYNCD_* variables that look like misspelt flag names
}

// loadSettings parses args with fs and then fills each flag the command
// line did not set from environ (KEY=VALUE entries, as os.Environ gives)
// and then from the config file, which --config or SYNCD_CONFIG names
// when fs has a "config" flag. Values of the flags in secret are not
// repeated in errors. flag.ErrHelp is returned as it is; every other
// error is a usageError.
func loadSettings(fs *flag.FlagSet, args, environ []string, secret map[string]bool) (*settings, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err} // the flag package printed it with the usage
	}
	s := &settings{source: make(map[string]string)}
	var problems []string
	fs.Visit(func(f *flag.Flag) {
		s.source[f.Name] = "flag"
		if secret[f.Name] && f.Value.String() == redacted {
			problems = append(problems, placeholder(f.Name, "flag"))
		}
	})
	if len(problems) > 0 {
		return nil, usageError{errors.New(strings.Join(problems, "; "))}
	}
	if err := s.applyEnv(fs, environ, secret); err != nil {
		return nil, err
	}
	if cf := fs.Lookup(configFlag); cf != nil && cf.Value.String() != "" {
		s.configPath = cf.Value.String()
		if err := s.applyFile(fs, s.configPath, secret); err != nil {
			return nil, err
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := s.source[f.Name]; !ok {
			s.source[f.Name] = "default"
		}
	})
	return s, nil
}

// placeholder is the error for a secret given as --print-config's
// placeholder, which the secret's own parser may not refuse.
func placeholder(name, from string) string {
	return fmt.Sprintf("--%s (from %s) is the placeholder %q that --print-config writes: put the secret back", name, from, redacted)
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func (s *settings) applyEnv(fs *flag.FlagSet, environ []string, secret map[string]bool) error {
	byEnv := make(map[string]*flag.Flag)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !actionFlags[f.Name] {
			byEnv[envName(f.Name)] = f
			names = append(names, envName(f.Name))
		}
	})
	seen := make(map[string]bool)
	var problems []string
	for _, kv := range environ {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(key, envPrefix) || seen[key] {
			continue // the first of duplicates counts, as with os.Getenv
		}
		seen[key] = true
		f := byEnv[key]
		if f == nil {
			// Not refused: Kubernetes alone defines SYNCD_PORT and the like
			// for a service named syncd. Near misses are worth a warning.
			if m := nearest(key, names); m != "" {
				s.warnings = append(s.warnings, fmt.Sprintf("ignoring %s: no such setting (did you mean %s?)", key, m))
			}
			continue
		}
		if _, onCmdLine := s.source[f.Name]; onCmdLine {
			continue
		}
		if secret[f.Name] && val == redacted {
			problems = append(problems, placeholder(f.Name, "env "+key))
			continue
		}
		if err := fs.Set(f.Name, val); err != nil {
			problems = append(problems, fmt.Sprintf("invalid value %s for %s (--%s): %v", shown(val, secret[f.Name]), key, f.Name, err))
			continue
		}
		s.source[f.Name] = "env " + key
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return usageError{errors.New(strings.Join(problems, "; "))}
	}
	return nil
}

// shown is how a value appears in an error: quoted, or not at all.
func shown(v string, secret bool) string {
	if secret {
		return "(secret, not shown)"
	}
	return strconv.Quote(v)
}

func (s *settings) applyFile(fs *flag.FlagSet, path string, secret map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usageError{fmt.Errorf("config file: %w", err)}
	}
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		return usageError{fmt.Errorf("config file %s: %w", path, err)} // toml: line N: …
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != configFlag && !actionFlags[f.Name] {
			names = append(names, f.Name)
		}
	})

	// Check every key before setting anything, so that all problems are
	// told at once, and wrong keys are refused even when a flag overrides.
	var problems []string
	values := make(map[string]string)
	for _, k := range keys {
		where := keyAt(data, k)
		f := fs.Lookup(k)
		switch {
		case k == configFlag:
			problems = append(problems, where+": a config file cannot name another; use --config or "+envName(configFlag))
			continue
		case f == nil || actionFlags[k]:
			msg := "unknown key " + where
			if _, isTable := m[k].(map[string]any); isTable {
				msg += ": settings are top-level keys, not a [table]"
			} else if n := nearest(k, names); n != "" {
				msg += fmt.Sprintf(": did you mean %q?", n)
			}
			problems = append(problems, msg)
			continue
		}
		v, err := render(m[k], kindOf(f))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		values[k] = v
	}
	if len(problems) > 0 {
		return usageError{fmt.Errorf("config file %s: %s", path, strings.Join(problems, "; "))}
	}
	for _, k := range keys {
		if _, set := s.source[k]; set {
			continue
		}
		if secret[k] && values[k] == redacted {
			problems = append(problems, placeholder(k, "file "+path))
			continue
		}
		if err := fs.Set(k, values[k]); err != nil {
			problems = append(problems, fmt.Sprintf("invalid value %s for %s: %v", shown(values[k], secret[k]), keyAt(data, k), err))
			continue
		}
		s.source[k] = "file " + path
	}
	if len(problems) > 0 {
		return usageError{fmt.Errorf("config file %s: %s", path, strings.Join(problems, "; "))}
	}
	return nil
}

// keyAt names top-level key k of a TOML file with its line when it can
// be found (the toml package keeps key positions to itself). Top-level
// keys come before the first [table] header.
func keyAt(data []byte, k string) string {
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			break
		}
		for _, key := range []string{k, strconv.Quote(k), "'" + k + "'"} {
			if rest, ok := strings.CutPrefix(line, key); ok && strings.HasPrefix(strings.TrimSpace(rest), "=") {
				return fmt.Sprintf("%q (line %d)", k, i+1)
			}
		}
	}
	return strconv.Quote(k)
}

// kind is what a flag's value is, as far as TOML types go.
type kind int

const (
	kindText kind = iota // strings and flag.Values of unknown types
	kindBool
	kindInt
	kindUint
	kindFloat
	kindDuration
)

func kindOf(f *flag.Flag) kind {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool:
			return kindBool
		case int, int64:
			return kindInt
		case uint, uint64:
			return kindUint
		case float64:
			return kindFloat
		case time.Duration:
			return kindDuration
		}
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return kindBool
	}
	return kindText
}

// render turns a TOML value into the text the flag parses. A string is
// taken as it would be on the command line, whatever the flag's type; other
// TOML types must match the flag's.
func render(v any, k kind) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		if k == kindBool {
			return strconv.FormatBool(v), nil
		}
	case int64:
		switch {
		case k == kindInt, k == kindUint, k == kindFloat:
			return strconv.FormatInt(v, 10), nil
		case k == kindDuration && v == 0:
			return "0", nil
		case k == kindDuration:
			return "", fmt.Errorf("a duration is a string with a unit, such as \"10m\" or \"%ds\", not %d", v, v)
		}
	case float64:
		if k == kindFloat {
			return strconv.FormatFloat(v, 'g', -1, 64), nil
		}
	case []any:
		if k != kindText {
			break
		}
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok || strings.Contains(s, ",") {
				return "", fmt.Errorf("a list is an array of strings without commas, or one comma-separated string")
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want %s, got %s", kindWant[k], tomlType(v))
}

var kindWant = map[kind]string{
	kindText:     "a string (or, for a list, an array of strings)",
	kindBool:     "true or false",
	kindInt:      "an integer",
	kindUint:     "a non-negative integer",
	kindFloat:    "a number",
	kindDuration: "a duration string such as \"10m\"",
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date-time"
	}
	return fmt.Sprintf("%T", v)
}

// nearest is the name in names closest to s by edit distance (ignoring
// case and treating '_' as '-'), if it is close enough to be a typo.
func nearest(s string, names []string) string {
	norm := func(x string) string { return strings.ToLower(strings.ReplaceAll(x, "_", "-")) }
	best, bestD := "", 3 // at most two edits
	for _, n := range names {
		if d := editDistance(norm(s), norm(n)); d < bestD || (d == bestD && n < best) {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printConfig writes fs's current values as a TOML config file, each
// after a comment with its usage, in name order, leaving out --config and
// the action flags. Non-empty values of the flags in secret are written as
// "<redacted>". With source (settings.source), each line says where its
// value came from.
func printConfig(w io.Writer, fs *flag.FlagSet, secret map[string]bool, source map[string]string) error {
	var b bytes.Buffer
	b.WriteString("# syncd settings in effect: flags, then " + envPrefix + "* environment variables,\n")
	b.WriteString("# then the --config file, then defaults. Loadable with --config.\n")
	if cf := fs.Lookup(configFlag); cf != nil && cf.Value.String() != "" {
		fmt.Fprintf(&b, "# config file read: %s\n", cf.Value.String())
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || f.Name == configFlag || actionFlags[f.Name] {
			return
		}
		var line string
		line, err = tomlLine(f, secret[f.Name])
		if err != nil {
			return
		}
		b.WriteString("\n")
		for _, u := range strings.Split(f.Usage, "\n") {
			fmt.Fprintf(&b, "# %s\n", u)
		}
		if src := source[f.Name]; src != "" {
			line += " # from: " + src
		}
		b.WriteString(line + "\n")
	})
	if err != nil {
		return err
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	return nil
}

// tomlLine is `name = value` for flag f, typed as TOML so that it loads
// back through render.
func tomlLine(f *flag.Flag, secret bool) (string, error) {
	s := f.Value.String()
	var v any = s
	switch {
	case secret && s != "":
		v = redacted
	case kindOf(f) == kindBool:
		if b, err := strconv.ParseBool(s); err == nil {
			v = b
		}
	case kindOf(f) == kindInt:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			v = n
		}
	case kindOf(f) == kindUint:
		// TOML integers are int64; larger values stay strings.
		if n, err := strconv.ParseUint(s, 10, 64); err == nil && n <= math.MaxInt64 {
			v = int64(n)
		}
	case kindOf(f) == kindFloat:
		if x, err := strconv.ParseFloat(s, 64); err == nil {
			v = x
		}
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]any{f.Name: v}); err != nil {
		return "", fmt.Errorf("print config: --%s: %w", f.Name, err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}
