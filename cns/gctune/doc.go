// Package gctune sets the garbage collector's target for cns. cns's live heap is about 2 MiB,
// so an idle cns at GOGC=50 stays small; but at that heap a burst of requests (each gRPC
// request allocates about 8 KiB) makes the collector run dozens of times a second, and every
// cycle wakes both cores and scans every goroutine's stack. While cns allocates fast the
// target is raised to a fixed heap floor; once it is quiet again the target drops back and
// the memory the burst used is returned to the kernel at once.
//
// Policy is the pure decision; Run applies it to the Go runtime on a ticker.
package gctune
