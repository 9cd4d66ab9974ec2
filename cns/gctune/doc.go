// Package gctune sets the garbage collector's target for cns. cns's live heap is about 2 MiB,
// so an idle cns at GOGC=50 stays small; but at that heap a burst of requests (each gRPC
// request allocates about 8 KiB) makes the collector run dozens of times a second, and every
// cycle wakes both cores and scans every goroutine's stack: at GOGC=50 a cns process answering
// RequestIPs+ReleaseIPs pairs as fast as it could spent 40 % of its CPU on it.
//
// The signal is how often the collector runs, not how much cns allocates, so it does not
// depend on what one request costs: while it would collect more than 8 times a second the
// heap goal is raised to 16 MiB; once the allocation rate would make it collect fewer than 2
// times a second at GOGC=50, the target drops back and the memory the burst used is returned
// to the kernel at once.
//
// Policy is the pure decision; Run applies it to the Go runtime on a ticker.
package gctune
