package cns

import (
	"context"
	"fmt"
	"sync"

	"github.com/vnet-cni/vnet-cni/ipampool"
)

// keyLocks serialises calls for the same pod interface (an ADD waiting on a scale-up must
// not race a DEL of the same key) without making other keys wait. A waiter gives up when
// its context ends, so a call stuck behind a long scale-up is not held past its deadline.
type keyLocks struct {
	mu    sync.Mutex
	locks map[ipampool.Key]*keyLock
}

// keyLock is a one-slot semaphore: a channel send can be abandoned, a sync.Mutex cannot.
type keyLock struct {
	held chan struct{}
	refs int
}

func (l *keyLocks) ref(k ipampool.Key) *keyLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = map[ipampool.Key]*keyLock{}
	}
	kl := l.locks[k]
	if kl == nil {
		kl = &keyLock{held: make(chan struct{}, 1)}
		l.locks[k] = kl
	}
	kl.refs++
	return kl
}

func (l *keyLocks) unref(k ipampool.Key, kl *keyLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if kl.refs--; kl.refs == 0 {
		delete(l.locks, k)
	}
}

// lock takes k's lock and returns its release, or gives up with ctx's error.
func (l *keyLocks) lock(ctx context.Context, k ipampool.Key) (func(), error) {
	kl := l.ref(k)
	select {
	case kl.held <- struct{}{}:
		return func() { <-kl.held; l.unref(k, kl) }, nil
	case <-ctx.Done():
		l.unref(k, kl)
		return nil, fmt.Errorf("waiting for another call on %s/%s: %w", k.ContainerID, k.IfName, ctx.Err())
	}
}

// tryLock takes k's lock only if it is free at once.
func (l *keyLocks) tryLock(k ipampool.Key) (func(), bool) {
	kl := l.ref(k)
	select {
	case kl.held <- struct{}{}:
		return func() { <-kl.held; l.unref(k, kl) }, true
	default:
		l.unref(k, kl)
		return nil, false
	}
}
