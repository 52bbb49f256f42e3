//go:build syncstore_upgrade_test

package fsm

// A test build stands for the next release: it supports one cluster
// version more, which adds UpgradeProbe. The rolling-upgrade test
// (test/upgrade) runs it next to release binaries.
func init() { registerUpgradeProbe() }
