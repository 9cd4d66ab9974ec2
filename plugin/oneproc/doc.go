// Package oneproc runs the plugin on one processor: cmd/vnet-cni imports it for its init,
// which sets GOMAXPROCS to 1 unless the process's environment sets GOMAXPROCS.
//
// An ADD or DEL is one goroutine's work, plus a second that waits on cns while the kernel
// builds the veth; both spend their time in system calls, and the node's cores belong to the
// other pods starting beside this one. With a processor per core the runtime wakes an idle
// processor's thread for each goroutine it readies, and the main goroutine moves between two
// processors' allocation caches, each taking fresh spans and stacks. Memory touched for the
// first time costs a page fault, and in a VM a fault is dear: the README (Performance) has
// what one processor saves per ADD and DEL.
//
// Where the call sits matters. Made at the end of init, after every other package's, it saved
// nothing. So this package imports only runtime and syscall: Go initializes packages in the
// order of their import paths, each once its imports are, and this one runs before os, time,
// unicode, regexp, netlink and the plugin, whose inits allocate nearly all that init does.
// TestOneProcessorIsSetBeforeTheInitsThatAllocate keeps it there.
package oneproc
