package cns

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

// Process-wide metrics of the cns daemon. Pool gauges are read from the manager at scrape
// time (poolCollector) so they can never drift from the pool.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cns_grpc_requests_total", Help: "gRPC requests by method and status code."}, []string{"method", "code"})
	requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cns_grpc_request_duration_seconds", Help: "gRPC request latency by method.",
		Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .05, .1, .5, 1, 2.5, 5, 10, 30}}, []string{"method"})
	cloudTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cns_cloud_requests_total", Help: "Cloud calls by operation and result (ok or the failure kind)."}, []string{"op", "result"})
	cloudSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cns_cloud_request_duration_seconds", Help: "Cloud call latency by operation, long-running operations included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}, []string{"op"})
	missingTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cns_missing_addresses_detected_total", Help: "Assigned addresses found gone from the NIC."})
	releasesAbandoned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cns_release_abandoned_total", Help: "Addresses whose removal from the NIC the cloud kept rejecting, given up and returned to the pool."})
)

func observeCloud(op string, start time.Time, err error) {
	cloudSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		result = cloud.KindOf(err).String()
		var ce *cloud.Error
		if errors.As(err, &ce) && ce.Code != "" && cloud.KindOf(err) == cloud.KindRejected {
			result += ":" + ce.Code
		}
	}
	cloudTotal.WithLabelValues(op, result).Inc()
}

// poolCollector exposes the pool's counts per state, its waiters and NIC writes.
type poolCollector struct {
	m                        *Manager
	addrs, waiters, nicWrite *prometheus.Desc
}

func newPoolCollector(m *Manager) *poolCollector {
	return &poolCollector{m: m,
		addrs:    prometheus.NewDesc("cns_pool_addresses", "Addresses in the pool by state.", []string{"state"}, nil),
		waiters:  prometheus.NewDesc("cns_pool_waiters", "Requests waiting for a scale-up.", nil, nil),
		nicWrite: prometheus.NewDesc("cns_nic_writes_total", "NIC writes attempted since start.", nil, nil)}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.addrs
	ch <- c.waiters
	ch <- c.nicWrite
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	n, w, writes := c.m.pool.Counts(), c.m.waiters, c.m.nicWrites
	c.m.mu.Unlock()
	for state, v := range map[string]int{"pending": n.Pending, "available": n.Available, "assigned": n.Assigned,
		"cooldown": n.Cooldown, "pending_release": n.PendingRelease, "missing": n.Missing} {
		ch <- prometheus.MustNewConstMetric(c.addrs, prometheus.GaugeValue, float64(v), state)
	}
	ch <- prometheus.MustNewConstMetric(c.waiters, prometheus.GaugeValue, float64(w))
	ch <- prometheus.MustNewConstMetric(c.nicWrite, prometheus.CounterValue, float64(writes))
}

// newRegistry returns a registry with the process, Go and cns metrics.
func newRegistry(m *Manager) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		requestsTotal, requestSeconds, cloudTotal, cloudSeconds, missingTotal, releasesAbandoned, newPoolCollector(m))
	return r
}

// metricsInterceptor counts and times every unary call.
func metricsInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	requestSeconds.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	requestsTotal.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}
