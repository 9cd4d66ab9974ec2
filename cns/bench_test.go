package cns_test

import (
	"testing"

	"github.com/vnet-cni/vnet-cni/test/stack"
)

// BenchmarkRequestReleasePairs: see stack.BenchPairs.
//
//	go test -run '^$' -bench RequestReleasePairs -benchtime 20000x ./cns/
func BenchmarkRequestReleasePairs(b *testing.B) { stack.BenchPairs(b) }
