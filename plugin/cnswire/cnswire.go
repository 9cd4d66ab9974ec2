// Package cnswire is the plugin's side of the cns.v1 messages: the values the plugin sends
// and reads, and their protobuf wire encoding, written with protowire.
//
// The generated messages (package cnsv1) register their descriptors and those of the
// well-known types they import in protobuf's global registry at init, and link protobuf's
// reflection runtime: about 3 ms of CPU at every exec of the plugin, which runs once per pod
// verb (README, "Where ADD's and DEL's time goes"). The plugin makes five calls with small
// messages (two of the requests have no fields), so it encodes them here. Every other program
// uses cnsv1.
//
// The tests hold this package to the generated code: each request's bytes equal
// proto.Marshal's, each answer decodes as proto.Unmarshal decodes it (replacing what the
// value held) (a fuzz test compares
// them on arbitrary input), and a field added to these messages in cns.proto, or changed in
// number, kind or cardinality, fails the tests until this package encodes it.
package cnswire

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// IPRequest is a cns.v1.RequestIPsRequest.
type IPRequest struct {
	ContainerID  string // 1
	IfName       string // 2
	Netns        string // 3
	PodNamespace string // 4
	PodName      string // 5
	Network      string // 6
	PodUID       string // 10
}

// Marshal encodes the request.
func (r IPRequest) Marshal() ([]byte, error) {
	var e encoder
	e.str(1, r.ContainerID)
	e.str(2, r.IfName)
	e.str(3, r.Netns)
	e.str(4, r.PodNamespace)
	e.str(5, r.PodName)
	e.str(6, r.Network)
	e.str(10, r.PodUID)
	return e.bytes()
}

// IPConfig is a cns.v1.IPConfig: one granted address.
type IPConfig struct {
	Address      string   // 1, a prefix: the address and its subnet's length
	Gateway      string   // 2
	SubnetPrefix string   // 3
	Routes       []string // 4, each a cns.v1.Route's destination
	MTU          uint32   // 5
}

// Grant is a cns.v1.RequestIPsResponse.
type Grant struct {
	IPConfigs []IPConfig // 1
}

// Unmarshal decodes the answer into g.
func (g *Grant) Unmarshal(b []byte) error {
	*g = Grant{}
	return decode(b, func(d *decoder, num protowire.Number) {
		if num == 1 {
			var c IPConfig
			ok := d.message(func(d *decoder, num protowire.Number) {
				switch num {
				case 1:
					d.str(&c.Address)
				case 2:
					d.str(&c.Gateway)
				case 3:
					d.str(&c.SubnetPrefix)
				case 4:
					var dst string
					if d.message(func(d *decoder, num protowire.Number) {
						if num == 1 {
							d.str(&dst)
						}
					}) {
						c.Routes = append(c.Routes, dst)
					}
				case 5:
					d.uint32(&c.MTU)
				}
			})
			if ok {
				g.IPConfigs = append(g.IPConfigs, c)
			}
		}
	})
}

// ReleaseRequest is a cns.v1.ReleaseIPsRequest.
type ReleaseRequest struct {
	ContainerID string // 1
	IfName      string // 2
	Network     string // 3
}

// Marshal encodes the request.
func (r ReleaseRequest) Marshal() ([]byte, error) {
	var e encoder
	e.str(1, r.ContainerID)
	e.str(2, r.IfName)
	e.str(3, r.Network)
	return e.bytes()
}

// ReleaseResponse is a cns.v1.ReleaseIPsResponse.
type ReleaseResponse struct {
	Released bool // 1
}

// Unmarshal decodes the answer into r.
func (r *ReleaseResponse) Unmarshal(b []byte) error {
	*r = ReleaseResponse{}
	return decode(b, func(d *decoder, num protowire.Number) {
		if num == 1 {
			d.bool(&r.Released)
		}
	})
}

// Attachment is a cns.v1.Attachment: a (container ID, ifname) the runtime still uses.
type Attachment struct {
	ContainerID string // 1
	IfName      string // 2
}

// GCRequest is a cns.v1.GarbageCollectRequest.
type GCRequest struct {
	Valid   []Attachment // 1
	Network string       // 2
}

// Marshal encodes the request.
func (r GCRequest) Marshal() ([]byte, error) {
	var e encoder
	for _, a := range r.Valid {
		var m encoder
		m.str(1, a.ContainerID)
		m.str(2, a.IfName)
		e.message(1, &m)
	}
	e.str(2, r.Network)
	return e.bytes()
}

// GCResult is a cns.v1.GarbageCollectResponse.
type GCResult struct {
	Released uint32 // 1
	Kept     uint32 // 2
}

// Unmarshal decodes the answer into r.
func (r *GCResult) Unmarshal(b []byte) error {
	*r = GCResult{}
	return decode(b, func(d *decoder, num protowire.Number) {
		switch num {
		case 1:
			d.uint32(&r.Released)
		case 2:
			d.uint32(&r.Kept)
		}
	})
}

// NotReadyReason is a cns.v1.NotReadyReason.
type NotReadyReason int32

// reasonNames are the enum's value names, as the generated String gives them.
var reasonNames = map[NotReadyReason]string{0: "NOT_READY_REASON_UNSPECIFIED", 1: "NOT_READY_REASON_STARTING",
	2: "NOT_READY_REASON_CLOUD_UNREACHABLE", 3: "NOT_READY_REASON_EXHAUSTED"}

// String names the reason; a number this plugin does not know is printed as a number.
func (r NotReadyReason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprint(int32(r))
}

// Status is a cns.v1.StatusResponse. The request (StatusRequest) has no fields.
type Status struct {
	Ready   bool           // 1
	Reason  NotReadyReason // 2
	Message string         // 3
}

// Unmarshal decodes the answer into s.
func (s *Status) Unmarshal(b []byte) error {
	*s = Status{}
	return decode(b, func(d *decoder, num protowire.Number) {
		switch num {
		case 1:
			d.bool(&s.Ready)
		case 2:
			var v uint64
			if d.varint(&v) {
				s.Reason = NotReadyReason(int32(v)) //nolint:gosec // protobuf's int32 is the low 32 bits
			}
		case 3:
			d.str(&s.Message)
		}
	})
}

// Allocation is a cns.v1.Allocation. CHECK reads the address and the missing flag of its
// pod's key; the other fields are decoded too, so an answer is judged whole, as the
// generated code judges it.
type Allocation struct {
	Address      string    // 1
	ContainerID  string    // 2
	IfName       string    // 3
	PodNamespace string    // 4
	PodName      string    // 5
	Netns        string    // 6
	AssignedAt   time.Time // 7, a google.protobuf.Timestamp; zero when absent
	Missing      bool      // 8
	Network      string    // 9
	PodUID       string    // 10
}

// Allocations is a cns.v1.ListAllocationsResponse. The request has no fields.
type Allocations []Allocation

// Unmarshal decodes the answer into a.
func (a *Allocations) Unmarshal(b []byte) error {
	*a = nil
	return decode(b, func(d *decoder, num protowire.Number) {
		if num == 1 {
			var (
				al         Allocation
				sec, nanos uint64
				hasTime    bool
			)
			ok := d.message(func(d *decoder, num protowire.Number) {
				switch num {
				case 1:
					d.str(&al.Address)
				case 2:
					d.str(&al.ContainerID)
				case 3:
					d.str(&al.IfName)
				case 4:
					d.str(&al.PodNamespace)
				case 5:
					d.str(&al.PodName)
				case 6:
					d.str(&al.Netns)
				case 7:
					hasTime = d.timestamp(&sec, &nanos) || hasTime
				case 8:
					d.bool(&al.Missing)
				case 9:
					d.str(&al.Network)
				case 10:
					d.str(&al.PodUID)
				}
			})
			if ok {
				if hasTime {
					al.AssignedAt = time.Unix(int64(sec), int64(int32(nanos))).UTC() //nolint:gosec // protobuf's int64 and int32
				}
				*a = append(*a, al)
			}
		}
	})
}

// errInvalidUTF8 is protobuf's rule for proto3 strings, on both ends.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// encoder appends fields in field-number order, leaving out zero values as proto3 does.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) str(num protowire.Number, s string) {
	if s == "" {
		return
	}
	if !utf8.ValidString(s) && e.err == nil {
		e.err = fmt.Errorf("field %d: %w", num, errInvalidUTF8)
	}
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = protowire.AppendString(e.b, s)
}

func (e *encoder) message(num protowire.Number, m *encoder) {
	if m.err != nil && e.err == nil {
		e.err = m.err
	}
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = protowire.AppendBytes(e.b, m.b)
}

func (e *encoder) bytes() ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	if e.b == nil {
		return []byte{}, nil
	}
	return e.b, nil
}

// decoder reads one field's value for a message's field function. A value whose wire type
// is not the field's is skipped as an unknown field, as protobuf's runtime does.
type decoder struct {
	typ protowire.Type
	b   []byte // the input from the field's value on
	n   int    // bytes of the value consumed by the field function; -1 when unread
	err error
}

// decode calls field for each field of the message in b, with num its number; the field
// function reads the value with one of the decoder's methods or leaves it (unknown).
func decode(b []byte, field func(d *decoder, num protowire.Number)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("cns answer: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber { // ConsumeTag allows MessageSet's larger numbers
			return fmt.Errorf("cns answer: field number %d is out of range", num)
		}
		b = b[n:]
		d := decoder{typ: typ, b: b, n: -1}
		field(&d, num)
		if d.err != nil {
			return d.err
		}
		if d.n < 0 { // unknown, or known with another wire type: skipped
			d.n = protowire.ConsumeFieldValue(num, typ, b)
			if d.n < 0 {
				return fmt.Errorf("cns answer: field %d: %w", num, protowire.ParseError(d.n))
			}
		}
		b = b[d.n:]
	}
	return nil
}

func (d *decoder) fail(n int) {
	d.err = fmt.Errorf("cns answer: %w", protowire.ParseError(n))
}

// varint reads a varint value into v; false when the field has another wire type or the
// value is broken (then d.err says so).
func (d *decoder) varint(v *uint64) bool {
	if d.typ != protowire.VarintType {
		return false
	}
	x, n := protowire.ConsumeVarint(d.b)
	if n < 0 {
		d.fail(n)
		return false
	}
	*v, d.n = x, n
	return true
}

func (d *decoder) bool(v *bool) {
	var x uint64
	if d.varint(&x) {
		*v = x != 0
	}
}

func (d *decoder) uint32(v *uint32) {
	var x uint64
	if d.varint(&x) {
		*v = uint32(x) //nolint:gosec // protobuf's uint32 is the low 32 bits
	}
}

// value reads a length-delimited value.
func (d *decoder) value() ([]byte, bool) {
	if d.typ != protowire.BytesType {
		return nil, false
	}
	v, n := protowire.ConsumeBytes(d.b)
	if n < 0 {
		d.fail(n)
		return nil, false
	}
	d.n = n
	return v, true
}

func (d *decoder) str(v *string) {
	b, ok := d.value()
	if !ok {
		return
	}
	if !utf8.Valid(b) {
		d.err = fmt.Errorf("cns answer: %w", errInvalidUTF8)
		return
	}
	*v = string(b)
}

// timestamp decodes a google.protobuf.Timestamp into its seconds and nanos, over what an
// earlier occurrence of the field set (protobuf merges a repeated singular message); false
// when the value is not a message.
func (d *decoder) timestamp(sec, nanos *uint64) bool {
	return d.message(func(d *decoder, num protowire.Number) {
		switch num {
		case 1:
			d.varint(sec)
		case 2:
			d.varint(nanos)
		}
	})
}

// message decodes an embedded message with field; false when the value is not one.
func (d *decoder) message(field func(d *decoder, num protowire.Number)) bool {
	b, ok := d.value()
	if ok {
		d.err = decode(b, field)
	}
	return ok && d.err == nil
}
