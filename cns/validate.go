package cns

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// Field limits. The attachment identity (network, container ID, ifname) must fit the host
// veth's label within the kernel's alias limit (contract.MaxNetworkName and friends); Kubernetes
// names fit DNS subdomains.
//
// Validation is strict where something is created (RequestIPs) and lenient where something
// is released (ReleaseIPs, GarbageCollect): an older cns accepted longer IDs, and a key this
// cns would refuse cannot be allocated, so refusing its release could only leave a pod stuck
// terminating.
const (
	maxContainerID = contract.MaxContainerID
	maxIfName      = contract.MaxIfName
	maxNetwork     = contract.MaxNetworkName
	maxK8sName     = 253
	maxNetnsPath   = 4096
	maxReleaseKey  = 4096 // bounds what a release looks up, nothing more
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

// checkKey validates the key of a new allocation. '/' separates the parts of the host veth
// label, so no part may hold one.
func checkKey(containerID, ifname string) (ipampool.Key, error) {
	if err := checkField("container_id", containerID, maxContainerID, true); err != nil {
		return ipampool.Key{}, err
	}
	if strings.Contains(containerID, "/") {
		return ipampool.Key{}, fmt.Errorf("%w: container_id %q contains '/'", ErrInvalid, containerID)
	}
	if err := checkField("ifname", ifname, maxIfName, true); err != nil {
		return ipampool.Key{}, err
	}
	if strings.ContainsAny(ifname, "/ \t:") || ifname == "." || ifname == ".." {
		return ipampool.Key{}, fmt.Errorf("%w: ifname %q is not a valid interface name", ErrInvalid, ifname)
	}
	return ipampool.Key{ContainerID: containerID, IfName: ifname}, nil
}

// checkNetwork validates the network of a new allocation ("" is the legacy network).
func checkNetwork(network string) error {
	if err := checkField("network", network, maxNetwork, false); err != nil {
		return err
	}
	if strings.ContainsAny(network, "/ \t") {
		return fmt.Errorf("%w: network %q is not a valid CNI network name", ErrInvalid, network)
	}
	return nil
}

// releaseKey reads the key of a release or a GC entry leniently: any non-empty key that some
// cns could have stored is looked up; an unknown one is simply not held.
func releaseKey(containerID, ifname string) (ipampool.Key, error) {
	if containerID == "" || ifname == "" {
		return ipampool.Key{}, fmt.Errorf("%w: container_id and ifname are required", ErrInvalid)
	}
	if len(containerID) > maxReleaseKey || len(ifname) > maxReleaseKey {
		return ipampool.Key{}, fmt.Errorf("%w: key longer than %d bytes", ErrInvalid, maxReleaseKey)
	}
	return ipampool.Key{ContainerID: containerID, IfName: ifname}, nil
}

// ownerOf validates a RequestIPs request and returns the owner it names. A request without a
// network (a plugin that predates the field) belongs to legacy, the network cns served then.
func ownerOf(req *cnsv1.RequestIPsRequest, legacy string) (ipampool.Owner, error) {
	k, err := checkKey(req.GetContainerId(), req.GetIfname())
	if err != nil {
		return ipampool.Owner{}, err
	}
	if err := checkNetwork(req.GetNetwork()); err != nil {
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
	network := req.GetNetwork()
	if network == "" {
		network = legacy
	}
	return ipampool.Owner{Key: k, Network: network, PodNamespace: req.GetPodNamespace(), PodName: req.GetPodName(), PodUID: req.GetPodUid(), Netns: req.GetNetns()}, nil
}

// validSet reads a GarbageCollect request's attachments as a set (leniently, as releases).
func validSet(req *cnsv1.GarbageCollectRequest) (map[ipampool.Key]bool, error) {
	valid := make(map[ipampool.Key]bool, len(req.GetValidAttachments()))
	for i, a := range req.GetValidAttachments() {
		k, err := releaseKey(a.GetContainerId(), a.GetIfname())
		if err != nil {
			return nil, fmt.Errorf("valid_attachments[%d]: %w", i, err)
		}
		valid[k] = true
	}
	return valid, nil
}
