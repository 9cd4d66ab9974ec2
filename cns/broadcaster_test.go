package cns

import (
	"sync/atomic"
	"testing"
	"time"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// TestThousandIdleWatchersNeverBlockThePool subscribes a thousand watchers that never read
// and publishes far more events than their buffers hold. The pool's side (send) returns at
// once every time — a blocking send would hang this test — and every event is accounted for
// per watcher: buffered for it, or counted as dropped so its stream can say so.
func TestThousandIdleWatchersNeverBlockThePool(t *testing.T) {
	const watchers, events = 1000, 3000
	b := newBroadcaster()
	type sub struct {
		ch      <-chan *cnsv1.WatchPoolResponse
		dropped *atomic.Uint64
	}
	subs := make([]sub, watchers)
	for i := range subs {
		ch, dropped, cancel := b.subscribe()
		defer cancel()
		subs[i] = sub{ch, dropped}
	}
	for range events {
		b.send(&cnsv1.WatchPoolResponse{})
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < len(subs); {
		s := subs[i]
		if got := uint64(len(s.ch)) + s.dropped.Load(); got == events {
			i++
			continue
		} else if got > events {
			t.Fatalf("watcher %d: %d buffered + %d dropped > %d events", i, len(s.ch), s.dropped.Load(), events)
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher %d: %d buffered + %d dropped of %d events after 20 s", i, len(s.ch), s.dropped.Load(), events)
		}
		time.Sleep(time.Millisecond) // polling the fan-out goroutine's progress, bounded by the deadline
	}
}
