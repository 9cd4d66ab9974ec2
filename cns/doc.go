// Package cns is the node IP service: it keeps a warm pool of VNet addresses on the node's
// NIC (growing and shrinking it through a cloud backend), persists every allocation before
// acknowledging it, and serves the cns.v1 gRPC API.
//
// The pieces: Manager (pool.go) owns the ipampool.Pool under one mutex and runs the single
// background loop that talks to the cloud; the gRPC services (ipam.go, poolsvc.go) are thin
// adapters over it; errors.go is the one place domain errors become gRPC status codes; Run
// (run.go) wires listeners, store, cloud and metrics.
package cns
