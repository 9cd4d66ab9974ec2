package cns

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// poolService is the read-only cns.v1.PoolService. Each listener has its own, with its own
// bound on WatchPool subscribers, so watchers on the TCP listener cannot starve the node's own.
type poolService struct {
	cnsv1grpc.UnimplementedPoolServiceServer
	m        *Manager
	watchers chan struct{} // one slot per WatchPool stream
}

// WatchPool subscribers per listener: the loopback TCP one serves dashboards and grpcurl,
// the unix one the node's own tools.
const (
	maxWatchersTCP  = 16
	maxWatchersUnix = 64
)

func newPoolService(m *Manager, maxWatchers int) *poolService {
	return &poolService{m: m, watchers: make(chan struct{}, maxWatchers)}
}

var _ cnsv1grpc.PoolServiceServer = (*poolService)(nil)

func countsPB(c ipampool.Counts) *cnsv1.PoolCounts {
	return &cnsv1.PoolCounts{Pending: uint32(c.Pending), Available: uint32(c.Available), Assigned: uint32(c.Assigned),
		Cooldown: uint32(c.Cooldown), PendingRelease: uint32(c.PendingRelease), Missing: uint32(c.Missing)}
}

// Snapshot is the pool as GetPool reports it.
func (m *Manager) Snapshot() *cnsv1.GetPoolResponse {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.cfg.Limits
	r := &cnsv1.GetPoolResponse{
		NicId:   m.nicState.ID,
		Counts:  countsPB(m.pool.Counts()),
		Waiters: uint32(m.waiters),
		Limits: &cnsv1.PoolLimits{BatchSize: uint32(l.BatchSize), MinFree: uint32(l.MinFree), MaxFree: uint32(l.MaxFree),
			MaxIps: uint32(l.MaxIPs), CooldownSeconds: l.Cooldown.Seconds(), ReleaseDelaySeconds: l.ReleaseDelay.Seconds()},
		NicWrites: m.nicWrites,
	}
	if m.nicState.Subnet.IsValid() {
		r.SubnetPrefix = m.nicState.Subnet.String()
	}
	if m.inflight != nil {
		r.PendingOperation = &cnsv1.CloudOperation{Add: uint32(m.inflight.Add), Remove: uint32(len(m.inflight.Remove)),
			StartedAt: timestamppb.New(m.inflightAt)}
	}
	if m.lastErr != nil {
		r.LastError, r.LastErrorAt = m.lastErr.Error(), timestamppb.New(m.lastErrAt)
	}
	return r
}

func (s *poolService) GetPool(context.Context, *cnsv1.GetPoolRequest) (*cnsv1.GetPoolResponse, error) {
	return s.m.Snapshot(), nil
}

func (s *poolService) ListAllocations(context.Context, *cnsv1.ListAllocationsRequest) (*cnsv1.ListAllocationsResponse, error) {
	s.m.mu.Lock()
	entries := s.m.pool.Entries()
	s.m.mu.Unlock()
	out := &cnsv1.ListAllocationsResponse{}
	for _, e := range entries {
		if e.State != ipampool.Assigned {
			continue
		}
		out.Allocations = append(out.Allocations, &cnsv1.Allocation{Address: e.Addr.String(),
			ContainerId: e.Owner.ContainerID, Ifname: e.Owner.IfName, PodNamespace: e.Owner.PodNamespace,
			PodName: e.Owner.PodName, PodUid: e.Owner.PodUID, Netns: e.Owner.Netns, Network: e.Owner.Network, AssignedAt: timestamppb.New(e.AssignedAt), Missing: e.Missing})
	}
	return out, nil
}

func (s *poolService) WatchPool(_ *cnsv1.WatchPoolRequest, stream cnsv1grpc.PoolService_WatchPoolServer) error {
	select {
	case s.watchers <- struct{}{}:
		defer func() { <-s.watchers }()
	default:
		return toStatus(fmt.Errorf("%w: %d WatchPool streams already open on this listener; close one", ErrExhausted, cap(s.watchers)))
	}
	ch, dropped, cancel := s.m.events.subscribe()
	defer cancel()
	// The header tells the client its subscription is in place: every later event reaches it,
	// so it may read the pool once and then follow the events.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	var told uint64
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev := <-ch:
			if d := dropped.Load(); d > told {
				lost := &cnsv1.WatchPoolResponse{Type: eventError, At: ev.At,
					Message: fmt.Sprintf("watcher fell behind: %d events dropped", d-told), Counts: ev.Counts}
				told = d
				if err := stream.Send(lost); err != nil {
					return err
				}
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
