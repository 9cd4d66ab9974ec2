// Package oneproc runs the plugin on one processor: cmd/vnet-cni imports it for its init,
// which sets GOMAXPROCS to 1 unless the environment sets GOMAXPROCS (see Env).
//
// An ADD or DEL is one goroutine's work, plus a second that waits on cns while the kernel
// builds the veth; both spend most of their time in system calls, and on a node starting pods
// the cores are busy with the other pods' ADDs. With the runtime's default (the CPUs it may
// use, two here) a goroutine readied while a processor is idle wakes a thread to run it, and
// the goroutines take fresh spans and stacks in each processor's allocation cache. Memory
// touched for the first time costs a page fault, and in a VM a fault is dear. The README
// (Performance) has what one processor saves per ADD and DEL.
//
// Where the call sits matters, as measured rather than explained: made in main's init, after
// every other package's, it saved at most half as much on ADD and nothing on DEL. So this
// package imports only runtime, strconv and syscall. Go initializes, again and again, the
// first package in import-path order whose imports are all initialized, so this one runs
// after a dozen standard-library packages and before os, time, unicode, regexp, netlink and
// the plugin. TestOneProcessorIsSetEarlyInInit keeps it there.
//
// The call stops the world to drop the second processor (about 0.2 ms of CPU) and turns off
// the runtime's periodic update of GOMAXPROCS, which a process that lives for one CNI call
// never needs. Only GOMAXPROCS=1 in the environment would spare the runtime its start with
// two processors.
package oneproc
