package controller

import (
	"context"
	"log/slog"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// watchStandby says, until elected is closed, why this instance does not lead: every period it
// reads the Lease, and logs its holder when that changes, or (at warn) the error that keeps it
// from reading it when that appears or changes — a missing namespace or missing rights on
// coordination.k8s.io leases would otherwise leave a standby silent forever — and when it
// clears. A steady standby logs nothing more. client-go's own election errors reach the same
// log through klog.
func watchStandby(ctx context.Context, r client.Reader, ns, name string, period time.Duration, elected <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(period)
	defer t.Stop()
	lease := ns + "/" + name
	last := "" // what was last logged: "holder:<id>", "free", or "error:<text>"
	for {
		select {
		case <-ctx.Done():
			return
		case <-elected:
			log.Info("leading: this instance holds the lease", "lease", lease)
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, period)
		l := &coordv1.Lease{}
		err := r.Get(rctx, client.ObjectKey{Namespace: ns, Name: name}, l)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var now string
		switch {
		case err != nil:
			now = "error:" + err.Error()
		case l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "":
			now = "holder:" + *l.Spec.HolderIdentity
		default:
			now = "free"
		}
		if now == last {
			continue
		}
		if err == nil && strings.HasPrefix(last, "error:") {
			log.Info("standby: the leader lease is readable again", "lease", lease)
		}
		last = now
		switch {
		case err != nil:
			log.Warn("standby: cannot read the leader lease; leader election cannot succeed until this is fixed",
				"lease", lease, "err", err)
		case l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "":
			var renewed time.Time
			if l.Spec.RenewTime != nil {
				renewed = l.Spec.RenewTime.Time
			}
			log.Info("standby: the lease is held by another instance", "lease", lease,
				"holder", *l.Spec.HolderIdentity, "renewed", renewed)
		default:
			log.Info("standby: the lease is free; acquiring", "lease", lease)
		}
	}
}
