// Package unary makes unary gRPC calls over HTTP/2 with prior knowledge on a unix socket.
//
// It exists for one caller: the CNI plugin, a process exec'd for every pod that makes one or
// two calls and exits. grpc-go's package initialisation (balancers, resolvers, channelz, its
// HTTP/2 transport, status protos) cost that process about a fifth of its start, and net/http's
// (the HTTP/2 client, TLS, x509) another 4 ms per exec on a 2-core VM, more than the rest of the
// plugin's init together (README "Where ADD's and DEL's time goes"). A unary call is a POST
// with a 5-byte frame around the message and the status in the trailers, so each call opens
// its own connection, speaks the few HTTP/2 frames such an exchange needs (h2.go; HPACK is
// x/net's) and closes it. Messages come encoded and leave encoded (the plugin's are in
// package cnswire), and status codes are this package's Code. Long-lived processes use grpc-go.
package unary

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/encoding/protowire"
)

// MaxResponse bounds a response message; a larger answer is refused (Internal).
const MaxResponse = 4 << 20

// ErrTransport marks a call that got no answer: nothing listening, the connection refused or
// lost before a status arrived. An answer that breaks HTTP/2 is ErrProtocol; an answer,
// including an error status, is an *Error.
var ErrTransport = errors.New("grpc transport")

// Conn calls the gRPC server behind one unix socket. Its zero value is not usable; see Dial.
type Conn struct {
	path string

	mu    sync.Mutex
	conns map[net.Conn]struct{} // the calls in flight, closed by Close
}

// Dial returns a Conn for the server on the unix socket at path. Each call connects anew.
func Dial(path string) *Conn { return &Conn{path: path, conns: map[net.Conn]struct{}{}} }

// Close ends the calls in flight; a Conn's calls leave nothing open once they return.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.conns {
		conn.Close()
	}
	return nil
}

// Invoke calls method (its full name, "/package.Service/Method") with the encoded request
// message msg and returns the encoded answer message; the caller owns both encodings. The
// context's deadline is sent as grpc-timeout, so the server bounds its work by it too. Its
// error is an *Error the server answered, or wraps ErrTransport or ErrProtocol (or is the
// context's error, when that ended the call).
func (c *Conn) Invoke(ctx context.Context, method string, msg []byte) ([]byte, error) {
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	hdrs := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method}, {Name: ":authority", Value: "localhost"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}}
	if dl, ok := ctx.Deadline(); ok {
		hdrs = append(hdrs, hpack.HeaderField{Name: "grpc-timeout", Value: timeout(time.Until(dl))})
	}
	// A request the server says it never processed (it was going away, or refused the
	// stream) is sent once more, on a new connection.
	r, err := c.exchange(ctx, hdrs, frame)
	if errors.Is(err, errUnprocessed) {
		r, err = c.exchange(ctx, hdrs, frame)
	}
	var reset streamReset
	switch {
	case errors.Is(err, errUnprocessed) && errors.As(err, &reset):
		return nil, &Error{Code: Unavailable, Message: reset.Error()}
	case errors.Is(err, errUnprocessed):
		return nil, transportErr(ctx, err)
	case err != nil:
		return nil, err
	}
	return answer(r)
}

// exchange makes one attempt on a new connection; its errors are final except errUnprocessed.
func (c *Conn) exchange(ctx context.Context, hdrs []hpack.HeaderField, frame []byte) (*reply, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, transportErr(ctx, err)
	}
	c.mu.Lock()
	c.conns[conn] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
		conn.Close()
	}()
	// The context's end (deadline or cancel) unblocks I/O; by then ctx.Err() says why.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r, err := exchange(conn, hdrs, frame, 5+MaxResponse)
	if err == nil {
		return r, nil
	}
	// The caller's deadline or cancel wins over what it caused: grpc-go's server resets the
	// stream (CANCEL) when the grpc-timeout we sent passes, racing our own deadline.
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var reset streamReset
	switch {
	case errors.Is(err, errUnprocessed):
		return nil, err
	case errors.As(err, &reset) && uint32(reset) == errCodeRefused:
		return nil, fmt.Errorf("%w: %w", errUnprocessed, err)
	case errors.As(err, &reset):
		code := resetCode(uint32(reset))
		if dl, ok := ctx.Deadline(); ok && code == Canceled && !time.Now().Before(dl) {
			code = DeadlineExceeded
		}
		return nil, &Error{Code: code, Message: reset.Error()}
	}
	return nil, transportErr(ctx, err)
}

// answer judges a complete reply: as grpc-go, one with a gRPC content type by its
// grpc-status, whatever its HTTP status; anything else by its HTTP status.
func answer(r *reply) ([]byte, error) {
	status, _ := strconv.Atoi(r.headers.get(":status"))
	ct := r.headers.get("content-type")
	if !isGRPC(ct) || status != 200 && r.headers.get("grpc-status") == "" {
		code := Unknown
		if status != 200 {
			code = httpCode(status)
		}
		return nil, &Error{Code: code, Message: fmt.Sprintf("HTTP status %d, content type %q", status, ct)}
	}
	if len(r.body) > 5+MaxResponse {
		return nil, &Error{Code: Internal, Message: fmt.Sprintf("answer is over the %d bytes read", MaxResponse)}
	}
	if r.endedInData {
		return nil, &Error{Code: Internal, Message: "server closed the stream without sending trailers"}
	}
	// A trailers-only answer (an error before any message) carries its status in the headers.
	st := r.trailers
	if st.get("grpc-status") == "" {
		st = r.headers
	}
	if err := statusOf(st); err != nil {
		return nil, err
	}
	return oneMessage(r.body)
}

// resetCode maps a RST_STREAM error code to a gRPC code, as grpc-go's client does.
func resetCode(c uint32) Code {
	switch c {
	case 0x0, 0x1, 0x2, 0x4, 0x5, 0x6, 0x9, 0xa, 0xd: // NO_ERROR, PROTOCOL, INTERNAL, SETTINGS_TIMEOUT,
		return Internal // STREAM_CLOSED, FRAME_SIZE, COMPRESSION, CONNECT, HTTP_1_1_REQUIRED
	case 0x3, errCodeCalm: // FLOW_CONTROL, ENHANCE_YOUR_CALM
		return ResourceExhausted
	case errCodeRefused:
		return Unavailable
	case errCodeCancel:
		return Canceled
	case 0xc: // INADEQUATE_SECURITY
		return PermissionDenied
	}
	return Unknown
}

// isGRPC tells a gRPC content type: application/grpc, alone or followed by "+codec" or ";".
func isGRPC(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// transportErr is a call that ended without a status: the context's end when that ended it,
// a protocol error as it is, the transport's failure otherwise.
func transportErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, ErrProtocol):
		return err
	}
	return fmt.Errorf("%w: %w", ErrTransport, err)
}

// oneMessage returns the single uncompressed message of a unary response body.
func oneMessage(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, &Error{Code: Internal, Message: "response has no message"}
	}
	if b[0] != 0 {
		return nil, &Error{Code: Internal, Message: "response is compressed; none was asked for"}
	}
	n := binary.BigEndian.Uint32(b[1:5])
	switch {
	case n > MaxResponse:
		return nil, &Error{Code: ResourceExhausted, Message: fmt.Sprintf("response of %d bytes is over %d", n, MaxResponse)}
	case uint64(len(b)) != 5+uint64(n):
		return nil, &Error{Code: Internal, Message: "response is not exactly one message"}
	}
	return b[5:], nil
}

// statusOf reads the grpc-status, grpc-message and grpc-status-details-bin of an answer: nil
// for OK, an *Error otherwise.
func statusOf(h header) error {
	s := h.get("grpc-status")
	if s == "" {
		return &Error{Code: Unknown, Message: "answer has no grpc-status"}
	}
	c, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return &Error{Code: Internal, Message: fmt.Sprintf("grpc-status %q", s)}
	}
	if Code(c) == OK {
		return nil
	}
	e := &Error{Code: Code(c), Message: unescape(h.get("grpc-message"))}
	if d := h.get("grpc-status-details-bin"); d != "" {
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
	Code    Code
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
func httpCode(s int) Code {
	switch s {
	case 400:
		return Internal
	case 401:
		return Unauthenticated
	case 403:
		return PermissionDenied
	case 404:
		return Unimplemented
	case 429, 502, 503, 504:
		return Unavailable
	}
	return Unknown
}
