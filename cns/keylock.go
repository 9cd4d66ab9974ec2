package cns

import (
	"sync"

	"github.com/vnet-cni/vnet-cni/ipampool"
)

// keyLocks serialises calls for the same pod interface (an ADD waiting on a scale-up must
// not race a DEL of the same key) without making other keys wait.
type keyLocks struct {
	mu    sync.Mutex
	locks map[ipampool.Key]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock takes k's lock and returns its release.
func (l *keyLocks) lock(k ipampool.Key) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[ipampool.Key]*keyLock{}
	}
	kl := l.locks[k]
	if kl == nil {
		kl = &keyLock{}
		l.locks[k] = kl
	}
	kl.refs++
	l.mu.Unlock()
	kl.mu.Lock()
	return func() {
		kl.mu.Unlock()
		l.mu.Lock()
		if kl.refs--; kl.refs == 0 {
			delete(l.locks, k)
		}
		l.mu.Unlock()
	}
}
