package controller

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

// Metrics are the controller's own series. The work queue's depth, adds and latency come from
// controller-runtime (workqueue_depth{name="nodenetworkconfig"} and friends) on the same registry.
type Metrics struct {
	writes     *prometheus.CounterVec
	throttled  prometheus.Counter
	budgetWait prometheus.Histogram
	writeTime  prometheus.Histogram
	specToStat prometheus.Histogram
	reads      *prometheus.CounterVec
	drift      prometheus.Counter

	mu   sync.Mutex
	seen map[string]seenGen // node → the newest spec generation seen and when
}

type seenGen struct {
	gen int64
	at  time.Time
}

// NewMetrics registers the controller's series on reg; budget's tokens are exported as a gauge.
func NewMetrics(reg prometheus.Registerer, budget *Budget) *Metrics {
	m := &Metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vnet_controller_arm_writes_total",
			Help: "NIC writes issued to ARM, by outcome (ok or the cloud failure kind)."}, []string{"result"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "vnet_controller_arm_throttled_total",
			Help: "ARM answers 429 (each pauses every write for its Retry-After)."}),
		budgetWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vnet_controller_write_budget_wait_seconds",
			Help: "Time a write waited for the cluster-wide ARM write budget.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		writeTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vnet_controller_arm_write_seconds",
			Help: "NIC write duration, long-running operation and budget wait included.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
		specToStat: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vnet_controller_spec_to_status_seconds",
			Help: "Time from the controller seeing a new spec generation to the status answering it.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vnet_controller_resync_reads_total",
			Help: "Periodic NIC re-reads (drift detection), by outcome."}, []string{"result"}),
		drift: prometheus.NewCounter(prometheus.CounterOpts{Name: "vnet_controller_drift_detected_total",
			Help: "Periodic re-reads that found the NIC changed out of band (the status was updated)."}),
		seen: map[string]seenGen{},
	}
	tokens := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vnet_controller_write_budget_tokens",
		Help: "Writes the budget allows right now."}, budget.Tokens)
	reg.MustRegister(m.writes, m.throttled, m.budgetWait, m.writeTime, m.specToStat, m.reads, m.drift, tokens)
	return m
}

func (m *Metrics) write(err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = cloud.KindOf(err).String()
	}
	m.writes.WithLabelValues(result).Inc()
	m.writeTime.Observe(d.Seconds())
}

func (m *Metrics) resyncRead(err error) {
	result := "ok"
	if err != nil {
		result = cloud.KindOf(err).String()
	}
	m.reads.WithLabelValues(result).Inc()
}

func (m *Metrics) drifted() { m.drift.Inc() }

// specSeen notes when a spec generation was first seen (from the watch event).
func (m *Metrics) specSeen(node string, gen int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.seen[node]; !ok || s.gen < gen {
		if !ok {
			m.seen[node] = seenGen{gen: gen, at: time.Now()}
		} else {
			m.seen[node] = seenGen{gen: gen, at: s.at} // coalesced: latency counts from the oldest unanswered change
		}
	}
}

// settled drops what was seen of a node whose status already answered its spec (the
// controller's start lists every object): no latency to observe.
func (m *Metrics) settled(node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.seen, node)
}

// answered observes the latency of every seen generation up to gen.
func (m *Metrics) answered(node string, gen int64) {
	m.mu.Lock()
	s, ok := m.seen[node]
	if ok && s.gen <= gen {
		delete(m.seen, node)
	}
	m.mu.Unlock()
	if ok && s.gen <= gen {
		m.specToStat.Observe(time.Since(s.at).Seconds())
	}
}
