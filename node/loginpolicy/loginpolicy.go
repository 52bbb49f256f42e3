// Package loginpolicy turns the operator's login policy (a preset name or
// a custom mapping of device classes to class groups) into the policy a
// Login command carries. The state machine decides with the policy in the
// command, so replicas and retries agree whatever each node's flags say.
package loginpolicy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// DefaultClasses are the device classes a node knows unless configured.
var DefaultClasses = []string{"phone", "pad", "desktop", "web"}

// Default is the preset used unless configured: one session per class.
const Default = OnePerClass

// Presets, after OpenIM's multi-terminal login policies.
const (
	// All: no limit (every device may be logged in at once).
	All = "all"
	// OnePerClass: one session per device class; a second phone ends the
	// first phone's session.
	OnePerClass = "one-per-class"
	// OneDevice: one session in all; any login ends the previous one.
	OneDevice = "one-device"
	// OneMobileOnePCWebFree: one of phone and pad together, one desktop,
	// any number of web sessions.
	OneMobileOnePCWebFree = "one-mobile-one-pc-web-free"
)

// Presets lists the preset names.
var Presets = []string{All, OnePerClass, OneDevice, OneMobileOnePCWebFree}

// Parse builds the policy named by spec for the device classes: a preset
// name, or a custom mapping "group=class+class:limit,group=class:limit"
// (limit 0: no limit) that must place every class in exactly one group.
func Parse(spec string, classes []string) (*fsmpb.LoginPolicy, error) {
	if len(classes) == 0 {
		return nil, fmt.Errorf("login policy: no device classes")
	}
	var p *fsmpb.LoginPolicy
	switch spec {
	case "", OnePerClass:
		p = &fsmpb.LoginPolicy{}
		for _, c := range classes {
			p.Groups = append(p.Groups, &fsmpb.ClassGroup{Name: c, Classes: []string{c}, Limit: 1})
		}
	case All:
		p = &fsmpb.LoginPolicy{Groups: []*fsmpb.ClassGroup{{Name: "all", Classes: slices.Clone(classes)}}}
	case OneDevice:
		p = &fsmpb.LoginPolicy{Groups: []*fsmpb.ClassGroup{{Name: "all", Classes: slices.Clone(classes), Limit: 1}}}
	case OneMobileOnePCWebFree:
		want := []string{"desktop", "pad", "phone", "web"}
		if got := slices.Sorted(slices.Values(classes)); !slices.Equal(got, want) {
			return nil, fmt.Errorf("login policy %q needs exactly the classes phone, pad, desktop and web (have %v); give a custom mapping instead", spec, classes)
		}
		p = &fsmpb.LoginPolicy{Groups: []*fsmpb.ClassGroup{
			{Name: "mobile", Classes: []string{"phone", "pad"}, Limit: 1},
			{Name: "pc", Classes: []string{"desktop"}, Limit: 1},
			{Name: "web", Classes: []string{"web"}},
		}}
	default:
		var err error
		if p, err = parseCustom(spec); err != nil {
			return nil, err
		}
	}
	if err := fsm.ValidateLoginPolicy(p); err != nil {
		return nil, fmt.Errorf("login policy %q: %w", spec, err)
	}
	var mapped []string
	for _, g := range p.GetGroups() {
		mapped = append(mapped, g.GetClasses()...)
	}
	if a, b := slices.Sorted(slices.Values(mapped)), slices.Sorted(slices.Values(classes)); !slices.Equal(a, b) {
		return nil, fmt.Errorf("login policy %q maps the classes %v, but the device classes are %v: each class must be in exactly one group", spec, a, b)
	}
	return p, nil
}

func parseCustom(spec string) (*fsmpb.LoginPolicy, error) {
	if !strings.Contains(spec, "=") {
		return nil, fmt.Errorf("login policy %q: not a preset (%s) nor a mapping like mobile=phone+pad:1,desktop=desktop:1,web=web:0", spec, strings.Join(Presets, ", "))
	}
	p := &fsmpb.LoginPolicy{}
	for _, part := range strings.Split(spec, ",") {
		name, rest, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("login policy: %q is not group=class+class:limit", part)
		}
		list, limitStr, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("login policy: group %q has no :limit (0 for no limit)", name)
		}
		limit, err := strconv.ParseUint(limitStr, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("login policy: group %q: limit %q is not a number", name, limitStr)
		}
		p.Groups = append(p.Groups, &fsmpb.ClassGroup{Name: name, Classes: strings.Split(list, "+"), Limit: uint32(limit)})
	}
	return p, nil
}

// Describe renders a policy as its custom mapping (for logs and status).
func Describe(p *fsmpb.LoginPolicy) string {
	parts := make([]string, 0, len(p.GetGroups()))
	for _, g := range p.GetGroups() {
		parts = append(parts, fmt.Sprintf("%s=%s:%d", g.GetName(), strings.Join(g.GetClasses(), "+"), g.GetLimit()))
	}
	return strings.Join(parts, ",")
}
