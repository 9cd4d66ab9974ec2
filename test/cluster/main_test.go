package cluster

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	stopOnSignal()
	os.Exit(m.Run())
}
