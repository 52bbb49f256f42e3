// Package docker tests the image (Dockerfile, scripts/docker-build.sh) and
// deploy/compose.yaml for real: a three-node TLS cluster in containers,
// driven from the host through the syncctl binary, with a node killed and
// restarted. It skips, saying why, where Docker or docker-compose is not
// there, or when SYNCSTORE_DOCKER_TEST=0.
package docker

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
