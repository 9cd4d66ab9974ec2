package cns

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/timestamppb"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

const (
	eventScaleUp   = cnsv1.EventType_EVENT_TYPE_SCALE_UP
	eventScaleDown = cnsv1.EventType_EVENT_TYPE_SCALE_DOWN
	eventAssigned  = cnsv1.EventType_EVENT_TYPE_ASSIGNED
	eventReleased  = cnsv1.EventType_EVENT_TYPE_RELEASED
	eventError     = cnsv1.EventType_EVENT_TYPE_ERROR
	eventReconcile = cnsv1.EventType_EVENT_TYPE_RECONCILED
)

// broadcaster fans pool events out to WatchPool streams. The pool only queues an event (one
// channel send, under its lock or not); a goroutine of the broadcaster's own delivers it to
// every subscriber, so many watchers cost the pool nothing. A subscriber that falls behind
// loses events rather than slowing the pool; it is told how many it missed.
type broadcaster struct {
	n     atomic.Int32
	queue chan *cnsv1.WatchPoolResponse
	start sync.Once
	mu    sync.Mutex
	subs  map[chan *cnsv1.WatchPoolResponse]*atomic.Uint64
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: map[chan *cnsv1.WatchPoolResponse]*atomic.Uint64{},
		queue: make(chan *cnsv1.WatchPoolResponse, 1024)}
}

func (b *broadcaster) subscribe() (<-chan *cnsv1.WatchPoolResponse, *atomic.Uint64, func()) {
	b.start.Do(func() { go b.fanOut() }) // lives as long as the process, idle without events
	ch := make(chan *cnsv1.WatchPoolResponse, 256)
	dropped := &atomic.Uint64{}
	b.mu.Lock()
	b.subs[ch] = dropped
	b.n.Add(1)
	b.mu.Unlock()
	return ch, dropped, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.n.Add(-1)
		b.mu.Unlock()
	}
}

// send queues ev without blocking; a full queue drops it for every subscriber.
func (b *broadcaster) send(ev *cnsv1.WatchPoolResponse) {
	select {
	case b.queue <- ev:
	default:
		b.mu.Lock()
		for _, dropped := range b.subs {
			dropped.Add(1)
		}
		b.mu.Unlock()
	}
}

func (b *broadcaster) fanOut() {
	for ev := range b.queue {
		b.deliver(ev)
	}
}

func (b *broadcaster) deliver(ev *cnsv1.WatchPoolResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch, dropped := range b.subs {
		select {
		case ch <- ev:
		default:
			dropped.Add(1)
		}
	}
}

// watched reports whether any WatchPool stream listens; callers skip building an event's
// message when none does.
func (m *Manager) watched() bool { return m.events.n.Load() > 0 }

// publish sends an event with the pool's counts, if anyone listens.
func (m *Manager) publish(t cnsv1.EventType, addr netip.Addr, msg string) {
	if !m.watched() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.publishLocked(t, addr, msg)
}

func (m *Manager) publishLocked(t cnsv1.EventType, addr netip.Addr, msg string) {
	if m.events.n.Load() == 0 {
		return
	}
	ev := &cnsv1.WatchPoolResponse{Type: t, At: timestamppb.New(m.now()), Message: msg, Counts: countsPB(m.pool.Counts())}
	if addr.IsValid() {
		ev.Address = addr.String()
	}
	m.events.send(ev)
}
