package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/vnet-cni/vnet-cni/ipampool"
)

// allocRecordVersion is the version of the on-disk allocation record this cns writes.
//
//	v1 (no "v" field): {"addr","owner":{"ContainerID","IfName","PodNamespace","PodName","Netns"},"assignedAt"}
//	   — the Go structs as they happened to be, with no network name.
//	v2: {"v":2,"addr","network","containerID","ifname","podNamespace","podName","netns","assignedAt"}
//
// A v1 record loads with an empty Network; the manager migrates it (see Manager.Restore) to
// the network cns served before networks were recorded, and rewrites it as v2.
const allocRecordVersion = 2

// allocRecord is the disk form of an Allocation, apart from the domain types so that a
// renamed Go field never changes the file.
type allocRecord struct {
	V            int        `json:"v"`
	Addr         netip.Addr `json:"addr"`
	Network      string     `json:"network"`
	ContainerID  string     `json:"containerID"`
	IfName       string     `json:"ifname"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	PodName      string     `json:"podName,omitempty"`
	Netns        string     `json:"netns,omitempty"`
	AssignedAt   time.Time  `json:"assignedAt"`
}

// allocRecordV1 is the record written before versioning.
type allocRecordV1 struct {
	Addr  netip.Addr `json:"addr"`
	Owner struct {
		ContainerID, IfName, PodNamespace, PodName, Netns string
	} `json:"owner"`
	AssignedAt time.Time `json:"assignedAt"`
}

func encodeAllocation(a Allocation) ([]byte, error) {
	o := a.Owner
	return json.Marshal(allocRecord{V: allocRecordVersion, Addr: a.Addr, Network: o.Network, ContainerID: o.ContainerID,
		IfName: o.IfName, PodNamespace: o.PodNamespace, PodName: o.PodName, Netns: o.Netns, AssignedAt: a.AssignedAt})
}

func decodeAllocation(b []byte) (Allocation, error) {
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return Allocation{}, err
	}
	switch head.V {
	case 0:
		var r allocRecordV1
		if err := json.Unmarshal(b, &r); err != nil {
			return Allocation{}, err
		}
		o := r.Owner
		return Allocation{Addr: r.Addr, AssignedAt: r.AssignedAt, Owner: ipampool.Owner{
			Key:          ipampool.Key{ContainerID: o.ContainerID, IfName: o.IfName},
			PodNamespace: o.PodNamespace, PodName: o.PodName, Netns: o.Netns}}, nil
	case allocRecordVersion:
		var r allocRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return Allocation{}, err
		}
		return Allocation{Addr: r.Addr, AssignedAt: r.AssignedAt, Owner: ipampool.Owner{
			Key:     ipampool.Key{ContainerID: r.ContainerID, IfName: r.IfName},
			Network: r.Network, PodNamespace: r.PodNamespace, PodName: r.PodName, Netns: r.Netns}}, nil
	}
	return Allocation{}, fmt.Errorf("allocation record version %d, this cns reads up to %d", head.V, allocRecordVersion)
}
