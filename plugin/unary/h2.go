package unary

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// One unary exchange over a fresh HTTP/2 connection with prior knowledge (RFC 9113 §3.3): the
// client preface, SETTINGS, a connection WINDOW_UPDATE, then stream 1's HEADERS and DATA; the
// answer is read until stream 1 ends. Only what a unary client meets is handled: the server's
// SETTINGS (acknowledged; its initial window honoured), PING (answered), WINDOW_UPDATE,
// HEADERS + CONTINUATION, DATA, RST_STREAM and GOAWAY. HPACK is x/net's.

// Frame types and flags (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingInitialWindowSize = 0x4
	settingEnablePush        = 0x2

	defaultWindow  = 65535
	maxFrame       = 16384 // the default SETTINGS_MAX_FRAME_SIZE: every frame we send fits it
	ourWindow      = 1 << 24
	maxWindow      = 1<<31 - 1
	maxHeaderBlock = 1 << 20
	clientPreface  = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	errCodeRefused = 0x7
	errCodeCancel  = 0x8
	errCodeCalm    = 0xb
)

var (
	// ErrProtocol marks an answer that breaks HTTP/2: the server is there, but what it sent
	// is no answer to read.
	ErrProtocol = errors.New("HTTP/2 protocol error")
	// errUnprocessed marks a request the server says it never processed (GOAWAY before our
	// stream, RST_STREAM REFUSED_STREAM): it is safe to send again.
	errUnprocessed = errors.New("request not processed")
)

// header is a header or trailer block, names in lower case; the first value of a name wins.
type header map[string]string

func (h header) get(name string) string { return h[name] }

// reply is what one exchange got back.
type reply struct {
	headers, trailers header
	body              []byte // DATA of stream 1, up to the caller's limit + 1
	endedInData       bool   // the stream ended with DATA: no trailers
}

// streamReset is a RST_STREAM of our stream: the server got the request and gave it up.
type streamReset uint32

func (r streamReset) Error() string {
	return fmt.Sprintf("stream reset by the server (HTTP/2 error code %d)", uint32(r))
}

// exchange sends one request on conn and reads its answer. Bodies beyond limit bytes are not
// kept (the caller sees limit + 1 and refuses the answer).
func exchange(conn net.Conn, hdrs []hpack.HeaderField, body []byte, limit int) (*reply, error) {
	x := &h2{conn: conn, r: bufio.NewReaderSize(conn, maxFrame+9), dec: hpack.NewDecoder(4096, nil),
		connWin: defaultWindow, streamWin: defaultWindow, peerWindow: defaultWindow, limit: limit}
	var out bytes.Buffer
	out.WriteString(clientPreface)
	x.frame(&out, frameSettings, 0, 0, settings(settingEnablePush, 0, settingInitialWindowSize, ourWindow))
	x.frame(&out, frameWindowUpdate, 0, 0, u32(ourWindow-defaultWindow))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range hdrs {
		if err := enc.WriteField(f); err != nil {
			return nil, err
		}
	}
	if block.Len() > maxFrame {
		return nil, fmt.Errorf("request headers of %d bytes are over one frame", block.Len())
	}
	flags := byte(flagEndHeaders)
	if len(body) == 0 {
		flags |= flagEndStream
	}
	x.frame(&out, frameHeaders, flags, 1, block.Bytes())
	x.pending = body
	x.sendData(&out)
	_, _ = conn.Write(out.Bytes()) // as in send: a lost connection fails the first read
	for !x.done {
		if err := x.next(); err != nil {
			return nil, err
		}
	}
	return &x.reply, nil
}

// h2 is the state of one exchange.
type h2 struct {
	conn               net.Conn
	r                  *bufio.Reader
	dec                *hpack.Decoder
	connWin, streamWin int64 // what we may still send
	peerWindow         int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE, last seen
	pending            []byte
	limit              int
	block              []byte // a header block whose CONTINUATIONs are still coming
	blockEnds          bool   // that block ends the stream
	reply
	done bool
}

// frame appends one frame to w.
func (x *h2) frame(w *bytes.Buffer, typ, flags byte, stream uint32, payload []byte) {
	var h [9]byte
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream)
	w.Write(h[:])
	w.Write(payload)
}

// sendData appends as much of the request body as the windows allow.
func (x *h2) sendData(w *bytes.Buffer) {
	for len(x.pending) > 0 && x.connWin > 0 && x.streamWin > 0 {
		n := int64(min(len(x.pending), maxFrame))
		n = min(n, x.connWin, x.streamWin)
		var flags byte
		if int(n) == len(x.pending) {
			flags = flagEndStream
		}
		x.frame(w, frameData, flags, 1, x.pending[:n])
		x.pending = x.pending[n:]
		x.connWin -= n
		x.streamWin -= n
	}
}

// next reads and handles one frame.
func (x *h2) next() error {
	var h [9]byte
	if _, err := io.ReadFull(x.r, h[:]); err != nil {
		return err
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags, stream := h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
	if n > maxFrame {
		return fmt.Errorf("%w: frame of %d bytes", ErrProtocol, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(x.r, p); err != nil {
		return err
	}
	if x.block != nil && typ != frameContinuation {
		return fmt.Errorf("%w: frame type %d inside a header block", ErrProtocol, typ)
	}
	switch typ {
	case frameSettings:
		if stream != 0 {
			return fmt.Errorf("%w: SETTINGS on stream %d", ErrProtocol, stream)
		}
		return x.settings(flags, p)
	case framePing:
		if n != 8 || stream != 0 {
			return fmt.Errorf("%w: PING of %d bytes on stream %d", ErrProtocol, n, stream)
		}
		if flags&flagAck == 0 {
			x.send(framePing, flagAck, 0, p)
		}
	case frameWindowUpdate:
		if n != 4 {
			return fmt.Errorf("%w: WINDOW_UPDATE of %d bytes", ErrProtocol, n)
		}
		inc := int64(binary.BigEndian.Uint32(p) & 0x7fffffff)
		if inc == 0 {
			return fmt.Errorf("%w: WINDOW_UPDATE of 0", ErrProtocol)
		}
		switch stream {
		case 0:
			x.connWin += inc
		case 1:
			x.streamWin += inc
		}
		if x.connWin > maxWindow || x.streamWin > maxWindow {
			return fmt.Errorf("%w: window over 2^31-1", ErrProtocol)
		}
		x.flush()
	case frameGoAway:
		if n < 8 || stream != 0 {
			return fmt.Errorf("%w: GOAWAY of %d bytes on stream %d", ErrProtocol, n, stream)
		}
		if last := binary.BigEndian.Uint32(p) & 0x7fffffff; last < 1 {
			return fmt.Errorf("%w: server going away (HTTP/2 error code %d)", errUnprocessed, binary.BigEndian.Uint32(p[4:]))
		}
	case frameRSTStream:
		if n != 4 || stream == 0 {
			return fmt.Errorf("%w: RST_STREAM of %d bytes on stream %d", ErrProtocol, n, stream)
		}
		if stream == 1 {
			return streamReset(binary.BigEndian.Uint32(p))
		}
	case framePushPromise:
		return fmt.Errorf("%w: PUSH_PROMISE, push is off", ErrProtocol)
	case frameHeaders:
		if stream != 1 {
			return fmt.Errorf("%w: HEADERS on stream %d", ErrProtocol, stream)
		}
		p, err := unpad(flags, p)
		if err != nil {
			return err
		}
		if flags&flagPriority != 0 {
			if len(p) < 5 {
				return fmt.Errorf("%w: short HEADERS priority", ErrProtocol)
			}
			p = p[5:]
		}
		x.blockEnds = flags&flagEndStream != 0
		if flags&flagEndHeaders == 0 {
			x.block = append([]byte{}, p...)
			return nil
		}
		return x.headerBlock(p)
	case frameContinuation:
		if x.block == nil || stream != 1 {
			return fmt.Errorf("%w: CONTINUATION outside a header block", ErrProtocol)
		}
		if x.block = append(x.block, p...); len(x.block) > maxHeaderBlock {
			return fmt.Errorf("%w: header block over %d bytes", ErrProtocol, maxHeaderBlock)
		}
		if flags&flagEndHeaders != 0 {
			b := x.block
			x.block = nil
			return x.headerBlock(b)
		}
	case frameData:
		if stream != 1 {
			return fmt.Errorf("%w: DATA on stream %d", ErrProtocol, stream)
		}
		if x.headers == nil || x.trailers != nil {
			return fmt.Errorf("%w: DATA outside the response body", ErrProtocol)
		}
		p, err := unpad(flags, p)
		if err != nil {
			return err
		}
		if room := x.limit + 1 - len(x.body); room > 0 {
			x.body = append(x.body, p[:min(len(p), room)]...)
		}
		switch {
		case len(x.body) > x.limit:
			// Over the bound: the caller refuses the answer without its status, and reading
			// on would wait for window this client never gives.
			x.done = true
		case flags&flagEndStream != 0:
			x.endedInData = true // no trailers: the caller judges (an error for gRPC)
			x.done = true
		}
	}
	return nil
}

// headerBlock decodes a complete header block: the response headers, then the trailers.
func (x *h2) headerBlock(b []byte) error {
	fields, err := x.dec.DecodeFull(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	h := header{}
	for _, f := range fields {
		name := strings.ToLower(f.Name)
		if _, seen := h[name]; !seen {
			h[name] = f.Value
		}
	}
	switch {
	case x.headers == nil:
		status := h[":status"]
		if status == "" {
			return fmt.Errorf("%w: response headers without :status", ErrProtocol)
		}
		if strings.HasPrefix(status, "1") { // an interim answer: the real headers follow
			if x.blockEnds {
				return fmt.Errorf("%w: interim %s answer ends the stream", ErrProtocol, status)
			}
			return nil
		}
		x.headers = h
	case x.trailers == nil && x.blockEnds:
		x.trailers = h
	default:
		return fmt.Errorf("%w: a header block after the headers that does not end the stream", ErrProtocol)
	}
	if x.blockEnds {
		x.done = true
	}
	return nil
}

// settings acknowledges the server's SETTINGS and applies its initial window (RFC 9113 §6.9.2:
// a change moves every stream's window by the difference).
func (x *h2) settings(flags byte, p []byte) error {
	if flags&flagAck != 0 {
		if len(p) != 0 {
			return fmt.Errorf("%w: SETTINGS ACK with a payload", ErrProtocol)
		}
		return nil
	}
	if len(p)%6 != 0 {
		return fmt.Errorf("%w: SETTINGS of %d bytes", ErrProtocol, len(p))
	}
	for ; len(p) > 0; p = p[6:] {
		if binary.BigEndian.Uint16(p) == settingInitialWindowSize {
			v := int64(binary.BigEndian.Uint32(p[2:]))
			if v > maxWindow {
				return fmt.Errorf("%w: initial window %d over 2^31-1", ErrProtocol, v)
			}
			x.streamWin += v - x.peerWindow
			x.peerWindow = v
		}
	}
	x.send(frameSettings, flagAck, 0, nil)
	x.flush()
	return nil
}

// flush sends the request body the windows now allow.
func (x *h2) flush() {
	var out bytes.Buffer
	x.sendData(&out)
	if out.Len() > 0 {
		_, _ = x.conn.Write(out.Bytes()) // as in send: a lost connection fails the next read
	}
}

// send writes one frame. A failed write does not end the exchange: the server may have
// answered and closed (an error before it read the whole request), and its frames are still
// to be read; a connection that is gone fails the next read.
func (x *h2) send(typ, flags byte, stream uint32, payload []byte) {
	var out bytes.Buffer
	x.frame(&out, typ, flags, stream, payload)
	_, _ = x.conn.Write(out.Bytes())
}

// unpad strips a padded frame's pad length byte and padding.
func unpad(flags byte, p []byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) < 1 || int(p[0]) > len(p)-1 {
		return nil, fmt.Errorf("%w: bad padding", ErrProtocol)
	}
	return p[1 : len(p)-int(p[0])], nil
}

func settings(kv ...uint32) []byte {
	b := make([]byte, 0, len(kv)*3)
	for i := 0; i+1 < len(kv); i += 2 {
		b = binary.BigEndian.AppendUint16(b, uint16(kv[i]))
		b = binary.BigEndian.AppendUint32(b, kv[i+1])
	}
	return b
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
