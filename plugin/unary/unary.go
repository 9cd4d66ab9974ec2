// Package unary makes unary gRPC calls over net/http's HTTP/2 client (unencrypted HTTP/2 with
// prior knowledge, over a unix socket).
//
// It exists for one caller: the CNI plugin, a process exec'd for every pod that makes one call
// and exits. grpc-go's package initialisation (balancers, resolvers, channelz, its own HTTP/2
// transport, status protos) costs that process about a third of its start; the standard
// library's HTTP/2 client costs a fraction of it, and a unary call is a POST with a 5-byte
// frame around the message and the status in the trailers. Long-lived processes use grpc-go.
package unary

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// MaxResponse bounds a response message; a larger one fails with ResourceExhausted, as it
// would in grpc-go (whose default bound is 4 MiB).
const MaxResponse = 4 << 20

// ErrTransport marks a call that got no answer: nothing listening, the connection refused or
// lost before a status arrived. An answer, including an error status, is an *Error.
var ErrTransport = errors.New("grpc transport")

// Conn calls the gRPC server behind one unix socket. Its zero value is not usable; see Dial.
type Conn struct {
	tr *http.Transport
	hc *http.Client

	mu    sync.Mutex
	conns []net.Conn // every connection dialled, closed by Close
}

// Dial returns a Conn for the server on the unix socket at path. It connects on the first call.
func Dial(path string) *Conn {
	c := &Conn{}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // the only protocol: "http://" means HTTP/2 prior knowledge
	d := net.Dialer{}
	c.tr = &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "unix", path)
			if err == nil {
				c.mu.Lock()
				c.conns = append(c.conns, conn)
				c.mu.Unlock()
			}
			return conn, err
		},
		DisableCompression: true,
	}
	c.hc = &http.Client{Transport: c.tr}
	return c
}

// Close closes every connection the Conn made, also one whose last stream the transport has
// not yet counted as done (an error answer in headers alone can leave it so).
func (c *Conn) Close() error {
	c.tr.CloseIdleConnections()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
	return nil
}

// Invoke calls method (its full name, "/package.Service/Method") with in and decodes the
// answer into out. The context's deadline is sent as grpc-timeout, so the server bounds its
// work by it too. It returns nil, an *Error the server answered, or an error wrapping
// ErrTransport (or the context's error, when that ended the call).
func (c *Conn) Invoke(ctx context.Context, method string, in, out proto.Message) error {
	msg, err := proto.Marshal(in)
	if err != nil {
		return fmt.Errorf("marshal %s request: %w", method, err)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost"+method, bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	req.Header = http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set("Grpc-Timeout", timeout(time.Until(dl)))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportErr(ctx, err)
	}
	defer resp.Body.Close()
	// As grpc-go: an answer with a gRPC content type is judged by its grpc-status, whatever
	// its HTTP status; anything else by its HTTP status.
	grpcType := isGRPC(resp.Header.Get("Content-Type"))
	if !grpcType || resp.StatusCode != http.StatusOK && resp.Header.Get("Grpc-Status") == "" {
		code := codes.Unknown
		if resp.StatusCode != http.StatusOK {
			code = httpCode(resp.StatusCode)
		}
		return &Error{Code: code, Message: fmt.Sprintf("HTTP status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 5+MaxResponse+1))
	if err != nil {
		return transportErr(ctx, err)
	}
	if len(body) > 5+MaxResponse {
		return &Error{Code: codes.Internal, Message: fmt.Sprintf("answer is over the %d bytes read", MaxResponse)}
	}
	// A trailers-only answer (an error before any message) carries its status in the headers.
	st := resp.Trailer
	if st.Get("Grpc-Status") == "" {
		st = resp.Header
	}
	if err := statusOf(st); err != nil {
		return err
	}
	m, err := oneMessage(body)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(m, out); err != nil {
		return &Error{Code: codes.Internal, Message: fmt.Sprintf("decode %s answer: %v", method, err)}
	}
	return nil
}

// isGRPC tells a gRPC content type: application/grpc, alone or followed by "+codec" or ";".
func isGRPC(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// transportErr is a call that ended without a status: the context's end when that ended it,
// the transport's failure otherwise (without net/http's "Post URL:" wrapping, which only
// repeats the method the caller names).
func transportErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%w: %w", ErrTransport, err)
}

// oneMessage returns the single uncompressed message of a unary response body.
func oneMessage(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, &Error{Code: codes.Internal, Message: "response has no message"}
	}
	if b[0] != 0 {
		return nil, &Error{Code: codes.Internal, Message: "response is compressed; none was asked for"}
	}
	n := binary.BigEndian.Uint32(b[1:5])
	switch {
	case n > MaxResponse:
		return nil, &Error{Code: codes.ResourceExhausted, Message: fmt.Sprintf("response of %d bytes is over %d", n, MaxResponse)}
	case uint64(len(b)) != 5+uint64(n):
		return nil, &Error{Code: codes.Internal, Message: "response is not exactly one message"}
	}
	return b[5:], nil
}

// statusOf reads the grpc-status, grpc-message and grpc-status-details-bin of an answer: nil
// for OK, an *Error otherwise.
func statusOf(h http.Header) error {
	s := h.Get("Grpc-Status")
	if s == "" {
		return &Error{Code: codes.Unknown, Message: "answer has no grpc-status"}
	}
	c, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return &Error{Code: codes.Internal, Message: fmt.Sprintf("grpc-status %q", s)}
	}
	if codes.Code(c) == codes.OK {
		return nil
	}
	e := &Error{Code: codes.Code(c), Message: unescape(h.Get("Grpc-Message"))}
	if d := h.Get("Grpc-Status-Details-Bin"); d != "" {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d, "="))
		if err == nil {
			e.Details = statusDetails(b)
		}
	}
	return e
}

// unescape decodes grpc-message's percent-encoding; a malformed escape is kept as it is.
func unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Error is an error status the server answered.
type Error struct {
	Code    codes.Code
	Message string
	// Details are the google.rpc.Status details (google.protobuf.Any), read with protowire:
	// decoding them as messages would link the status and Any descriptors, whose registration
	// is most of what this package saves.
	Details []Any
}

// Any is a google.protobuf.Any: the type URL and the encoded message.
type Any struct {
	TypeURL string
	Value   []byte
}

func (e *Error) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", e.Code, e.Message)
}

// statusDetails returns field 3 (details) of an encoded google.rpc.Status.
func statusDetails(b []byte) []Any {
	var out []Any
	for _, d := range Fields(b, 3) {
		var a Any
		if v := Fields(d, 1); len(v) > 0 {
			a.TypeURL = string(v[len(v)-1])
		}
		if v := Fields(d, 2); len(v) > 0 {
			a.Value = v[len(v)-1]
		}
		out = append(out, a)
	}
	return out
}

// Fields returns every length-delimited value of field num in an encoded message, in order;
// nil when the encoding is broken.
func Fields(b []byte, num protowire.Number) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil
			}
			out = append(out, v)
			b = b[l:]
			continue
		}
		if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return nil
		}
		b = b[l:]
	}
	return out
}

// timeout encodes d as a grpc-timeout value: at most 8 digits and a unit, rounded up.
func timeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range []struct {
		unit string
		size time.Duration
	}{{"n", time.Nanosecond}, {"u", time.Microsecond}, {"m", time.Millisecond}, {"S", time.Second}, {"M", time.Minute}} {
		if n := (d + u.size - 1) / u.size; n < 1e8 {
			return strconv.FormatInt(int64(n), 10) + u.unit
		}
	}
	return strconv.FormatInt(int64((d+time.Hour-1)/time.Hour), 10) + "H"
}

// httpCode maps an HTTP status that is not 200 to a gRPC code, as the gRPC HTTP/2 protocol
// says a client must.
func httpCode(s int) codes.Code {
	switch s {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}
