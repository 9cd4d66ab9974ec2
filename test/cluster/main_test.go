package cluster

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	StopOnSignal()
	os.Exit(m.Run())
}
