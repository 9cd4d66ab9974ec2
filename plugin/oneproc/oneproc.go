package oneproc

import (
	"runtime"
	"syscall"
)

// Env is the variable that, set, leaves the runtime's choice of processors alone.
const Env = "GOMAXPROCS"

func init() {
	if _, set := syscall.Getenv(Env); !set {
		runtime.GOMAXPROCS(1)
	}
}
