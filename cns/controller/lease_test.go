package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// leaseReader serves one Lease whose holder (or read error) the test sets.
type leaseReader struct {
	client.Reader
	mu     sync.Mutex
	holder string
	err    error
}

func (l *leaseReader) set(holder string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holder, l.err = holder, err
}

func (l *leaseReader) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	obj.(*coordv1.Lease).Spec.HolderIdentity = ptr.To(l.holder)
	return nil
}

// records counts log records.
type records struct {
	mu sync.Mutex
	n  int
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(context.Context, slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }
func (r *records) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// A standby logs when the holder changes or a read error appears or clears, not every period.
func TestAStandbyLogsChangesNotEveryPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lr, rec := &leaseReader{holder: "a"}, &records{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { watchStandby(ctx, lr, "ns", "l", time.Second, nil, slog.New(rec)); close(done) }()
		step := func(periods int, want int, what string) {
			t.Helper()
			time.Sleep(time.Duration(periods)*time.Second + time.Millisecond)
			synctest.Wait()
			if got := rec.count(); got != want {
				t.Fatalf("%s: %d log lines, want %d", what, got, want)
			}
		}
		step(10, 1, "one holder for 10 periods")
		lr.set("b", nil)
		step(5, 2, "the holder changed")
		lr.set("", errors.New("forbidden"))
		step(5, 3, "a read error appeared")
		lr.set("b", nil)
		step(5, 5, "the error cleared") // cleared, and who holds it
		cancel()
		<-done
	})
}
