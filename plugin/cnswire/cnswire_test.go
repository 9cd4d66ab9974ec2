package cnswire

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// fieldsOf is, per message, the fields this package writes or reads: number, name,
// cardinality, kind (and message or enum type), as it encodes them.
var fieldsOf = map[protoreflect.FullName]string{
	"cns.v1.RequestIPsRequest": "1 container_id string, 2 ifname string, 3 netns string, 4 pod_namespace string, " +
		"5 pod_name string, 6 network string, 10 pod_uid string",
	"cns.v1.RequestIPsResponse": "1 ip_configs repeated message cns.v1.IPConfig",
	"cns.v1.IPConfig": "1 address string, 2 gateway string, 3 subnet_prefix string, " +
		"4 routes repeated message cns.v1.Route, 5 mtu uint32",
	"cns.v1.Route":                   "1 destination string",
	"cns.v1.ReleaseIPsRequest":       "1 container_id string, 2 ifname string, 3 network string",
	"cns.v1.ReleaseIPsResponse":      "1 released bool",
	"cns.v1.Attachment":              "1 container_id string, 2 ifname string",
	"cns.v1.GarbageCollectRequest":   "1 valid_attachments repeated message cns.v1.Attachment, 2 network string",
	"cns.v1.GarbageCollectResponse":  "1 released uint32, 2 kept uint32",
	"cns.v1.StatusRequest":           "",
	"cns.v1.StatusResponse":          "1 ready bool, 2 reason enum cns.v1.NotReadyReason, 3 message string",
	"cns.v1.ListAllocationsRequest":  "",
	"cns.v1.ListAllocationsResponse": "1 allocations repeated message cns.v1.Allocation",
	"cns.v1.Allocation": "1 address string, 2 container_id string, 3 ifname string, 4 pod_namespace string, " +
		"5 pod_name string, 6 netns string, 7 assigned_at message google.protobuf.Timestamp, 8 missing bool, " +
		"9 network string, 10 pod_uid string",
	"google.protobuf.Timestamp": "1 seconds int64, 2 nanos int32",
}

// signature writes a message's fields as fieldsOf does.
func signature(md protoreflect.MessageDescriptor) string {
	var fs []string
	for i := range md.Fields().Len() {
		f := md.Fields().Get(i)
		s := fmt.Sprint(f.Number(), " ", f.Name(), " ")
		if f.Cardinality() == protoreflect.Repeated {
			s += "repeated "
		}
		s += f.Kind().String()
		switch {
		case f.Message() != nil:
			s += " " + string(f.Message().FullName())
		case f.Enum() != nil:
			s += " " + string(f.Enum().FullName())
		}
		if f.HasPresence() && f.Message() == nil {
			s += " (optional)" // proto3 optional: presence this package does not encode
		}
		fs = append(fs, s)
	}
	return strings.Join(fs, ", ")
}

// The methods the plugin calls, and the messages this package encodes for them.
var methods = map[protoreflect.FullName][2]protoreflect.FullName{
	"cns.v1.IPAMService.RequestIPs":      {"cns.v1.RequestIPsRequest", "cns.v1.RequestIPsResponse"},
	"cns.v1.IPAMService.ReleaseIPs":      {"cns.v1.ReleaseIPsRequest", "cns.v1.ReleaseIPsResponse"},
	"cns.v1.IPAMService.GarbageCollect":  {"cns.v1.GarbageCollectRequest", "cns.v1.GarbageCollectResponse"},
	"cns.v1.IPAMService.Status":          {"cns.v1.StatusRequest", "cns.v1.StatusResponse"},
	"cns.v1.PoolService.ListAllocations": {"cns.v1.ListAllocationsRequest", "cns.v1.ListAllocationsResponse"},
}

// A field added to one of these messages or changed in number, kind or cardinality, or a
// message changed under a method, fails here until this package encodes it so.
func TestEveryFieldIsHandled(t *testing.T) {
	for name, want := range fieldsOf {
		d, _ := protoregistry.GlobalFiles.FindDescriptorByName(name)
		md, _ := d.(protoreflect.MessageDescriptor)
		if md == nil {
			t.Errorf("%s: no such message", name)
			continue
		}
		if got := signature(md); got != want {
			t.Errorf("%s has fields\n  %s\nthis package encodes\n  %s", name, got, want)
		}
	}
	svcs := cnsv1grpc.File_cns_v1_service_proto.Services()
	for name, io := range methods {
		sd := svcs.ByName(name.Parent().Name())
		if sd == nil || sd.Methods().ByName(name.Name()) == nil {
			t.Errorf("%s: no such method", name)
			continue
		}
		m := sd.Methods().ByName(name.Name())
		if m.Input().FullName() != io[0] || m.Output().FullName() != io[1] || m.IsStreamingClient() || m.IsStreamingServer() {
			t.Errorf("%s is %s → %s; this package encodes %s → %s", name, m.Input().FullName(), m.Output().FullName(), io[0], io[1])
		}
	}
	ev := cnsv1.NotReadyReason(0).Descriptor().Values()
	if ev.Len() != len(reasonNames) {
		t.Errorf("NotReadyReason has %d values, this package names %d", ev.Len(), len(reasonNames))
	}
	for i := range ev.Len() {
		if v := ev.Get(i); NotReadyReason(v.Number()).String() != string(v.Name()) {
			t.Errorf("NotReadyReason %d is %s, this package names it %s", v.Number(), v.Name(), NotReadyReason(v.Number()))
		}
	}
}

// randString returns "" a third of the time, else up to 200 runes (so lengths over 127 bytes
// take two bytes), some outside ASCII.
func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return ""
	}
	rs := make([]rune, 1+r.IntN(200))
	for i := range rs {
		rs[i] = []rune("abc-_/0123456789:éΩ漢🙂")[r.IntN(20)]
	}
	return string(rs)
}

func TestRequestsEncodeAsTheGeneratedCode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	det := proto.MarshalOptions{Deterministic: true}
	check := func(name string, ours []byte, err error, gen proto.Message) {
		t.Helper()
		want, werr := det.Marshal(gen)
		if err != nil || werr != nil || !bytes.Equal(ours, want) {
			t.Fatalf("%s: ours %x (%v), generated %x (%v)", name, ours, err, want, werr)
		}
	}
	for range 500 {
		ipr := IPRequest{ContainerID: randString(r), IfName: randString(r), Netns: randString(r), PodNamespace: randString(r),
			PodName: randString(r), Network: randString(r), PodUID: randString(r)}
		b, err := ipr.Marshal()
		check("RequestIPsRequest", b, err, &cnsv1.RequestIPsRequest{ContainerId: ipr.ContainerID, Ifname: ipr.IfName, Netns: ipr.Netns,
			PodNamespace: ipr.PodNamespace, PodName: ipr.PodName, Network: ipr.Network, PodUid: ipr.PodUID})

		rel := ReleaseRequest{ContainerID: randString(r), IfName: randString(r), Network: randString(r)}
		b, err = rel.Marshal()
		check("ReleaseIPsRequest", b, err, &cnsv1.ReleaseIPsRequest{ContainerId: rel.ContainerID, Ifname: rel.IfName, Network: rel.Network})

		gc := GCRequest{Network: randString(r)}
		gen := &cnsv1.GarbageCollectRequest{Network: gc.Network}
		for range r.IntN(4) {
			a := Attachment{ContainerID: randString(r), IfName: randString(r)}
			gc.Valid = append(gc.Valid, a)
			gen.ValidAttachments = append(gen.ValidAttachments, &cnsv1.Attachment{ContainerId: a.ContainerID, Ifname: a.IfName})
		}
		b, err = gc.Marshal()
		check("GarbageCollectRequest", b, err, gen)
	}
	// An empty request is an empty message, not an absent one.
	if b, err := (ReleaseRequest{}).Marshal(); err != nil || b == nil || len(b) != 0 {
		t.Errorf("empty request: %x, %v", b, err)
	}
}

func TestInvalidUTF8IsRefusedAsTheGeneratedCodeRefusesIt(t *testing.T) {
	bad := "pod\xff"
	if _, err := proto.Marshal(&cnsv1.ReleaseIPsRequest{ContainerId: bad}); err == nil {
		t.Fatal("the generated code took invalid UTF-8; this test's premise is wrong")
	}
	if b, err := (ReleaseRequest{ContainerID: bad}).Marshal(); err == nil {
		t.Errorf("Release with invalid UTF-8 encoded as %x", b)
	}
	if b, err := (GCRequest{Valid: []Attachment{{IfName: bad}}}).Marshal(); err == nil {
		t.Errorf("an attachment with invalid UTF-8 encoded as %x", b)
	}
}

// The answers as the generated code decodes them, in this package's types.
func grantOf(m *cnsv1.RequestIPsResponse) Grant {
	var g Grant
	for _, c := range m.GetIpConfigs() {
		ic := IPConfig{Address: c.GetAddress(), Gateway: c.GetGateway(), SubnetPrefix: c.GetSubnetPrefix(), MTU: c.GetMtu()}
		for _, r := range c.GetRoutes() {
			ic.Routes = append(ic.Routes, r.GetDestination())
		}
		g.IPConfigs = append(g.IPConfigs, ic)
	}
	return g
}

func allocationsOf(m *cnsv1.ListAllocationsResponse) Allocations {
	var as Allocations
	for _, a := range m.GetAllocations() {
		al := Allocation{Address: a.GetAddress(), ContainerID: a.GetContainerId(), IfName: a.GetIfname(), PodNamespace: a.GetPodNamespace(),
			PodName: a.GetPodName(), Netns: a.GetNetns(), Missing: a.GetMissing(), Network: a.GetNetwork(), PodUID: a.GetPodUid()}
		if t := a.GetAssignedAt(); t != nil {
			al.AssignedAt = time.Unix(t.GetSeconds(), int64(t.GetNanos())).UTC()
		}
		as = append(as, al)
	}
	return as
}

// answers decodes b as each answer, with the generated code and with this package.
func answers(b []byte) []struct {
	name          string
	gen, ours     any
	genErr, onErr error
} {
	// Ours decode into values already holding an earlier answer: decoding replaces it, as
	// proto.Unmarshal does.
	var (
		g1 cnsv1.RequestIPsResponse
		o1 = Grant{IPConfigs: []IPConfig{{Address: "earlier"}}}
		g2 cnsv1.ReleaseIPsResponse
		o2 = ReleaseResponse{Released: true}
		g3 cnsv1.GarbageCollectResponse
		o3 = GCResult{Released: 1, Kept: 2}
		g4 cnsv1.StatusResponse
		o4 = Status{Ready: true, Reason: 1, Message: "earlier"}
		g5 cnsv1.ListAllocationsResponse
		o5 = Allocations{{Address: "earlier"}}
	)
	e1, f1 := proto.Unmarshal(b, &g1), o1.Unmarshal(b)
	e2, f2 := proto.Unmarshal(b, &g2), o2.Unmarshal(b)
	e3, f3 := proto.Unmarshal(b, &g3), o3.Unmarshal(b)
	e4, f4 := proto.Unmarshal(b, &g4), o4.Unmarshal(b)
	e5, f5 := proto.Unmarshal(b, &g5), o5.Unmarshal(b)
	return []struct {
		name          string
		gen, ours     any
		genErr, onErr error
	}{
		{"RequestIPsResponse", grantOf(&g1), o1, e1, f1},
		{"ReleaseIPsResponse", ReleaseResponse{g2.GetReleased()}, o2, e2, f2},
		{"GarbageCollectResponse", GCResult{g3.GetReleased(), g3.GetKept()}, o3, e3, f3},
		{"StatusResponse", Status{g4.GetReady(), NotReadyReason(g4.GetReason()), g4.GetMessage()}, o4, e4, f4},
		{"ListAllocationsResponse", allocationsOf(&g5), o5, e5, f5},
	}
}

// seeds are encoded answers of every kind, with unknown fields of every wire type appended.
func seeds() [][]byte {
	msgs := []proto.Message{
		&cnsv1.RequestIPsResponse{IpConfigs: []*cnsv1.IPConfig{{Address: "10.0.0.5/16", Gateway: "10.0.0.1", SubnetPrefix: "10.0.0.0/16",
			Routes: []*cnsv1.Route{{Destination: "0.0.0.0/0"}, {}}, Mtu: 1500}, {Address: "10.0.0.6/16"}}},
		&cnsv1.ReleaseIPsResponse{Released: true},
		&cnsv1.GarbageCollectResponse{Released: 3, Kept: 70000},
		&cnsv1.StatusResponse{Reason: cnsv1.NotReadyReason_NOT_READY_REASON_EXHAUSTED, Message: "out"},
		&cnsv1.ListAllocationsResponse{Allocations: []*cnsv1.Allocation{{Address: "10.0.0.5", ContainerId: "c1", Ifname: "eth0",
			PodNamespace: "ns", PodName: "p", Netns: "/x", AssignedAt: timestamppb.New(time.Date(2026, 11, 29, 8, 0, 0, 123, time.UTC)), Missing: true,
			Network: "vnet", PodUid: "u"}}},
	}
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 1<<40)
	unknown = protowire.AppendTag(unknown, 100, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 7)
	unknown = protowire.AppendTag(unknown, 101, protowire.Fixed64Type)
	unknown = protowire.AppendFixed64(unknown, 7)
	unknown = protowire.AppendTag(unknown, 102, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "x")
	unknown = protowire.AppendTag(unknown, 103, protowire.StartGroupType)
	unknown = protowire.AppendTag(unknown, 103, protowire.EndGroupType)
	out := [][]byte{nil, unknown, {0x0a, 0x02, 0x08}, {0x08, 0xff}, {0x0a, 0x01, 0xff},
		{0x0a, 0x03, 0x32, 0x01, 0xff},                               // an allocation whose netns is not UTF-8 (found by this fuzz test)
		{0x0a, 0x08, 0x3a, 0x02, 0x08, 0x05, 0x3a, 0x02, 0x10, 0x07}, // its time in two parts, merged
	}
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		out = append(out, b, append(slices.Clone(unknown), b...), append(slices.Clone(b), unknown...))
	}
	return out
}

// FuzzAnswersDecodeAsTheGeneratedCode: on any input, each answer decodes to the same values
// as with the generated code, and fails where it fails. `go test` runs the seeds; `go test
// -fuzz FuzzAnswersDecodeAsTheGeneratedCode ./plugin/cnswire/` searches further.
func FuzzAnswersDecodeAsTheGeneratedCode(f *testing.F) {
	for _, b := range seeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range answers(b) {
			if (a.genErr == nil) != (a.onErr == nil) {
				t.Fatalf("%s of %x: generated code's error %v, ours %v", a.name, b, a.genErr, a.onErr)
			}
			if a.genErr == nil && !reflect.DeepEqual(a.gen, a.ours) {
				t.Fatalf("%s of %x:\ngenerated %+v\nours      %+v", a.name, b, a.gen, a.ours)
			}
		}
	})
}

func TestNotReadyReasonNamesAnUnknownNumber(t *testing.T) {
	if got := NotReadyReason(42).String(); got != "42" {
		t.Errorf("NotReadyReason(42) = %q", got)
	}
}
