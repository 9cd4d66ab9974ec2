package cns

import (
	"context"
	"net/netip"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// ipamService is the mutating cns.v1.IPAMService, served only on the unix socket.
type ipamService struct {
	cnsv1grpc.UnimplementedIPAMServiceServer
	m *Manager
}

var _ cnsv1grpc.IPAMServiceServer = (*ipamService)(nil)

func (s *ipamService) RequestIPs(ctx context.Context, req *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	o, err := ownerOf(req, s.m.legacyNetwork())
	if err != nil {
		return nil, toStatus(err)
	}
	g, err := s.m.RequestIP(ctx, o)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cnsv1.RequestIPsResponse{IpConfigs: []*cnsv1.IPConfig{ipConfig(g)}}, nil
}

// ipConfig describes a grant: the pod address with the subnet's length, the VNet gateway
// (the subnet's first address, as in Azure) and a default route.
func ipConfig(g Grant) *cnsv1.IPConfig {
	return &cnsv1.IPConfig{
		Address:      netip.PrefixFrom(g.Entry.Addr, g.Subnet.Bits()).String(),
		Gateway:      g.Subnet.Addr().Next().String(),
		SubnetPrefix: g.Subnet.String(),
		Routes:       []*cnsv1.Route{{Destination: "0.0.0.0/0"}},
		Mtu:          g.MTU,
	}
}

func (s *ipamService) ReleaseIPs(ctx context.Context, req *cnsv1.ReleaseIPsRequest) (*cnsv1.ReleaseIPsResponse, error) {
	k, err := releaseKey(req.GetContainerId(), req.GetIfname())
	if err != nil {
		return nil, toStatus(err)
	}
	released, err := s.m.ReleaseNetworkIP(ctx, k, req.GetNetwork())
	if err != nil {
		return nil, toStatus(err)
	}
	return &cnsv1.ReleaseIPsResponse{Released: released}, nil
}

func (s *ipamService) GarbageCollect(_ context.Context, req *cnsv1.GarbageCollectRequest) (*cnsv1.GarbageCollectResponse, error) {
	valid, err := validSet(req)
	if err != nil {
		return nil, toStatus(err)
	}
	released, kept, err := s.m.GarbageCollect(req.GetNetwork(), valid)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cnsv1.GarbageCollectResponse{Released: uint32(released), Kept: uint32(kept)}, nil
}

func (s *ipamService) Status(context.Context, *cnsv1.StatusRequest) (*cnsv1.StatusResponse, error) {
	return s.m.Status(), nil
}

// Status tells whether a RequestIPs can be answered now or after a scale-up.
func (m *Manager) Status() *cnsv1.StatusResponse {
	select {
	case <-m.ready:
	default:
		return &cnsv1.StatusResponse{Reason: cnsv1.NotReadyReason_NOT_READY_REASON_STARTING,
			Message: "cns has not read the node NIC from the cloud yet"}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pool.Counts().Available > 0 {
		return &cnsv1.StatusResponse{Ready: true}
	}
	if err := m.exhaustedLocked(); err != nil {
		return &cnsv1.StatusResponse{Reason: cnsv1.NotReadyReason_NOT_READY_REASON_EXHAUSTED, Message: err.Error()}
	}
	if m.lastErr != nil {
		return &cnsv1.StatusResponse{Reason: cnsv1.NotReadyReason_NOT_READY_REASON_CLOUD_UNREACHABLE,
			Message: "no free address and the cloud API is failing: " + m.lastErr.Error()}
	}
	return &cnsv1.StatusResponse{Ready: true}
}
