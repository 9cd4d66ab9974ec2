package controller

import (
	"context"
	"log/slog"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// watchStandby says, until elected is closed, why this instance does not lead: every period it
// reads the Lease and logs its holder, or (at warn) the error that keeps it from reading it —
// a missing namespace or missing rights on coordination.k8s.io leases would otherwise leave a
// standby silent forever. client-go's own election errors reach the same log through klog.
func watchStandby(ctx context.Context, r client.Reader, ns, name string, period time.Duration, elected <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-elected:
			log.Info("leading: this instance holds the lease", "lease", ns+"/"+name)
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, period)
		l := &coordv1.Lease{}
		err := r.Get(rctx, client.ObjectKey{Namespace: ns, Name: name}, l)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("standby: cannot read the leader lease; leader election cannot succeed until this is fixed",
				"lease", ns+"/"+name, "err", err)
		case l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "":
			var renewed time.Time
			if l.Spec.RenewTime != nil {
				renewed = l.Spec.RenewTime.Time
			}
			log.Info("standby: the lease is held by another instance", "lease", ns+"/"+name,
				"holder", *l.Spec.HolderIdentity, "renewed", renewed)
		default:
			log.Info("standby: the lease is free; acquiring", "lease", ns+"/"+name)
		}
	}
}
