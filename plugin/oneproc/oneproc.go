package oneproc

import (
	"runtime"
	"strconv"
	"syscall"
)

// Env names the variable that, set to a positive number as the runtime reads it, leaves the
// runtime's choice of processors standing. The plugin inherits the container runtime's
// environment (libcni passes it on with the CNI variables), so a GOMAXPROCS set for containerd
// applies here too.
const Env = "GOMAXPROCS"

func init() {
	if !setByEnvironment() {
		runtime.GOMAXPROCS(1)
	}
}

// setByEnvironment reports whether the runtime took its processor count from Env: it does
// for a positive integer and ignores anything else.
func setByEnvironment() bool {
	v, ok := syscall.Getenv(Env)
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(v, 10, 32)
	return err == nil && n > 0
}
