package cns

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"unicode"

	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// ipamService is the mutating cns.v1.IPAMService, served only on the unix socket.
type ipamService struct {
	cnsv1.UnimplementedIPAMServiceServer
	m *Manager
}

var _ cnsv1.IPAMServiceServer = (*ipamService)(nil)

// Field limits: a container ID is a runtime's opaque ID (64 hex for containerd), an
// interface name fits IFNAMSIZ, Kubernetes names fit DNS subdomains.
const (
	maxContainerID = 256
	maxIfName      = 15
	maxK8sName     = 253
	maxNetnsPath   = 4096
)

func checkField(name, v string, limit int, required bool) error {
	switch {
	case v == "" && required:
		return fmt.Errorf("%w: %s is required", ErrInvalid, name)
	case len(v) > limit:
		return fmt.Errorf("%w: %s is %d bytes, at most %d allowed", ErrInvalid, name, len(v), limit)
	case strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) || r == unicode.ReplacementChar }) >= 0:
		return fmt.Errorf("%w: %s has a non-printable character", ErrInvalid, name)
	}
	return nil
}

func checkKey(containerID, ifname string) (ipampool.Key, error) {
	if err := checkField("container_id", containerID, maxContainerID, true); err != nil {
		return ipampool.Key{}, err
	}
	if err := checkField("ifname", ifname, maxIfName, true); err != nil {
		return ipampool.Key{}, err
	}
	if strings.ContainsAny(ifname, "/ \t:") || ifname == "." || ifname == ".." {
		return ipampool.Key{}, fmt.Errorf("%w: ifname %q is not a valid interface name", ErrInvalid, ifname)
	}
	return ipampool.Key{ContainerID: containerID, IfName: ifname}, nil
}

// ownerOf validates a RequestIPs request and returns the owner it names.
func ownerOf(req *cnsv1.RequestIPsRequest) (ipampool.Owner, error) {
	k, err := checkKey(req.GetContainerId(), req.GetIfname())
	if err != nil {
		return ipampool.Owner{}, err
	}
	for _, f := range []struct {
		name, v string
		limit   int
	}{{"netns", req.GetNetns(), maxNetnsPath}, {"pod_namespace", req.GetPodNamespace(), maxK8sName}, {"pod_name", req.GetPodName(), maxK8sName},
		{"pod_uid", req.GetPodUid(), maxK8sName}} {
		if err := checkField(f.name, f.v, f.limit, false); err != nil {
			return ipampool.Owner{}, err
		}
	}
	return ipampool.Owner{Key: k, PodNamespace: req.GetPodNamespace(), PodName: req.GetPodName(), PodUID: req.GetPodUid(), Netns: req.GetNetns()}, nil
}

func (s *ipamService) RequestIPs(ctx context.Context, req *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	o, err := ownerOf(req)
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

func (s *ipamService) ReleaseIPs(_ context.Context, req *cnsv1.ReleaseIPsRequest) (*cnsv1.ReleaseIPsResponse, error) {
	k, err := checkKey(req.GetContainerId(), req.GetIfname())
	if err != nil {
		return nil, toStatus(err)
	}
	released, err := s.m.ReleaseIP(k)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cnsv1.ReleaseIPsResponse{Released: released}, nil
}

// validSet validates a GarbageCollect request and returns its attachments as a set.
func validSet(req *cnsv1.GarbageCollectRequest) (map[ipampool.Key]bool, error) {
	valid := make(map[ipampool.Key]bool, len(req.GetValidAttachments()))
	for i, a := range req.GetValidAttachments() {
		k, err := checkKey(a.GetContainerId(), a.GetIfname())
		if err != nil {
			return nil, fmt.Errorf("valid_attachments[%d]: %w", i, err)
		}
		valid[k] = true
	}
	return valid, nil
}

func (s *ipamService) GarbageCollect(_ context.Context, req *cnsv1.GarbageCollectRequest) (*cnsv1.GarbageCollectResponse, error) {
	valid, err := validSet(req)
	if err != nil {
		return nil, toStatus(err)
	}
	released, kept, err := s.m.GarbageCollect(valid)
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
