package unary_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// A request far over HTTP/2's default windows (64 KiB) reaches grpc-go's server whole: the
// client sends DATA as the server's WINDOW_UPDATEs allow.
func TestRequestOverTheWindowsIsSentWhole(t *testing.T) {
	c := start(t, &server{})
	req := &cnsv1.GarbageCollectRequest{Network: "vnet"}
	for i := range 10000 {
		req.ValidAttachments = append(req.ValidAttachments, &cnsv1.Attachment{ContainerId: fmt.Sprintf("%064d", i), Ifname: "eth0"})
	}
	var got cnsv1.GarbageCollectResponse
	if err := c.Invoke(ctx(t), cnsv1grpc.IPAMService_GarbageCollect_FullMethodName, req, &got); err != nil {
		t.Fatal(err)
	}
	if got.GetKept() != 10000 {
		t.Fatalf("server read %d attachments of 10000", got.GetKept())
	}
}

// scripted runs script as the server of one connection, with x/net's framer: frames no
// grpc-go or net/http server would send on its own (a tiny window, padding, CONTINUATION,
// PING, resets).
func scripted(t *testing.T, script func(fr *http2.Framer) error) conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "h2.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var errs []error
		defer func() { done <- errors.Join(errs...) }()
		for { // every connection runs the script: a client may retry on a new one
			conn, err := l.Accept()
			if err != nil {
				return
			}
			preface := make([]byte, len(http2.ClientPreface))
			if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
				errs = append(errs, fmt.Errorf("client preface %q: %v", preface, err))
			} else if err := script(http2.NewFramer(conn, conn)); err != nil {
				errs = append(errs, err)
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("server script: %v", err)
		}
	})
	return dial(sock)
}

// readRequest reads frames until the client's request ends and returns its body.
func readRequest(fr *http2.Framer, onFrame func(http2.Frame) error) ([]byte, error) {
	var body []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if onFrame != nil {
			if err := onFrame(f); err != nil {
				return nil, err
			}
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return body, nil
			}
		case *http2.DataFrame:
			body = append(body, f.Data()...)
			if f.StreamEnded() {
				return body, nil
			}
		}
	}
}

// takeRequest sends the server's (empty) SETTINGS and reads the client's request.
func takeRequest(fr *http2.Framer) error {
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	_, err := readRequest(fr, nil)
	return err
}

func block(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

func grpcFrame(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

// The client sends no more than the windows allow: 65,535 bytes (the defaults) until the
// server opens them, then as a SETTINGS change of the initial window (+1,000 on the stream)
// and WINDOW_UPDATEs allow. The answer comes after an interim 100 answer and a PING the
// client must return, in a padded HEADERS split over CONTINUATIONs, padded DATA in two frames,
// and trailers.
func TestFramesAUnaryClientMeetsAreHandled(t *testing.T) {
	req := &cnsv1.RequestIPsRequest{ContainerId: string(bytes.Repeat([]byte{'c'}, 100000)), Ifname: "eth0"}
	want := &cnsv1.RequestIPsResponse{IpConfigs: []*cnsv1.IPConfig{{Address: "10.1.0.9/16", Gateway: "10.1.0.1"}}}
	c := scripted(t, func(fr *http2.Framer) error {
		if err := fr.WriteSettings(); err != nil {
			return err
		}
		var got int
		body, err := readRequest(fr, func(f http2.Frame) error {
			d, ok := f.(*http2.DataFrame)
			if !ok {
				return nil
			}
			before := got
			got += len(d.Data())
			switch {
			case before < 65535 && got > 65535:
				return fmt.Errorf("client sent %d bytes into windows of 65535", got)
			case got == 65535: // both windows spent: open the stream's by 1,000 only
				if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535 + 1000}); err != nil {
					return err
				}
				return fr.WriteWindowUpdate(0, 1<<20)
			case before < 65535+1000 && got > 65535+1000:
				return fmt.Errorf("client sent %d bytes into a stream window of %d", got, 65535+1000)
			case got == 65535+1000:
				return fr.WriteWindowUpdate(1, 1<<20)
			}
			return nil
		})
		if err != nil {
			return err
		}
		var r cnsv1.RequestIPsRequest
		if len(body) < 5 || proto.Unmarshal(body[5:], &r) != nil || !proto.Equal(&r, req) {
			return fmt.Errorf("request body of %d bytes did not decode to the request", len(body))
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":status", "100"), EndHeaders: true}); err != nil {
			return err
		}
		if err := fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
			return err
		}
		hb := block(":status", "200", "content-type", "application/grpc")
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb[:3], PadLength: 7}); err != nil {
			return err
		}
		if err := fr.WriteContinuation(1, false, hb[3:5]); err != nil {
			return err
		}
		if err := fr.WriteContinuation(1, true, hb[5:]); err != nil {
			return err
		}
		msg := grpcFrame(want)
		if err := fr.WriteDataPadded(1, false, msg[:4], []byte{0, 0, 0}); err != nil {
			return err
		}
		if err := fr.WriteData(1, false, msg[4:]); err != nil {
			return err
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("grpc-status", "0"), EndHeaders: true, EndStream: true}); err != nil {
			return err
		}
		for { // the PING comes back before the client hangs up
			f, err := fr.ReadFrame()
			if err != nil {
				return fmt.Errorf("connection ended before the PING came back: %w", err)
			}
			if p, ok := f.(*http2.PingFrame); ok {
				if !p.IsAck() || p.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
					return fmt.Errorf("PING answered with %+v", p)
				}
				return nil
			}
		}
	})
	var got cnsv1.RequestIPsResponse
	if err := c.Invoke(ctx(t), "/cns.v1.IPAMService/RequestIPs", req, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("got %v, want %v", &got, want)
	}
}

func TestResetsAndGoAwaysEndTheCall(t *testing.T) {
	for _, c := range []struct {
		name      string
		end       func(fr *http2.Framer) error
		code      unary.Code // the answer; OK means a transport error
		transport bool
	}{
		{"RST_STREAM REFUSED_STREAM", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeRefusedStream) }, unary.Unavailable, false},
		{"RST_STREAM CANCEL", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) }, unary.Canceled, false},
		{"RST_STREAM INTERNAL_ERROR", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeInternal) }, unary.Internal, false},
		{"GOAWAY before our stream", func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) }, unary.OK, true},
		{"closed without an answer", func(*http2.Framer) error { return nil }, unary.OK, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := scripted(t, func(fr *http2.Framer) error {
				if err := takeRequest(fr); err != nil {
					return err
				}
				return c.end(fr)
			})
			err := conn.Invoke(ctx(t), "/cns.v1.IPAMService/Status", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
			var e *unary.Error
			switch {
			case c.transport && !errors.Is(err, unary.ErrTransport):
				t.Fatalf("got %v, want a transport error", err)
			case !c.transport && (!errors.As(err, &e) || e.Code != c.code):
				t.Fatalf("got %v, want code %v", err, c.code)
			}
		})
	}
}

// answerOK writes a whole gRPC answer carrying m on stream 1.
func answerOK(fr *http2.Framer, m proto.Message) error {
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":status", "200", "content-type", "application/grpc"), EndHeaders: true}); err != nil {
		return err
	}
	if err := fr.WriteData(1, false, grpcFrame(m)); err != nil {
		return err
	}
	return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("grpc-status", "0"), EndHeaders: true, EndStream: true})
}

// windowScript checks that the client sends no more than limit bytes before the server
// sends more window with open, then answers.
func windowScript(start func(*http2.Framer) error, limit int, open func(*http2.Framer) error) func(*http2.Framer) error {
	return func(fr *http2.Framer) error {
		if err := start(fr); err != nil {
			return err
		}
		var got int
		_, err := readRequest(fr, func(f http2.Frame) error {
			if d, ok := f.(*http2.DataFrame); ok {
				before := got
				got += len(d.Data())
				switch {
				case before < limit && got > limit:
					return fmt.Errorf("client sent %d bytes into a window of %d", got, limit)
				case got == limit:
					return open(fr)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return answerOK(fr, &cnsv1.RequestIPsResponse{})
	}
}

func TestSendWindowsAreKeptApart(t *testing.T) {
	big := &cnsv1.RequestIPsRequest{ContainerId: string(bytes.Repeat([]byte{'c'}, 200000))}
	for _, c := range []struct {
		name   string
		script func(*http2.Framer) error
	}{
		{"the connection window binds though the stream's is large", func(fr *http2.Framer) error {
			// SETTINGS open the stream's window; a PING after them is answered only once the
			// client has sent whatever they let it send: all of it must fit the connection's.
			if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
				return err
			}
			if err := fr.WritePing(false, [8]byte{9}); err != nil {
				return err
			}
			var got int
			var opened bool
			_, err := readRequest(fr, func(f http2.Frame) error {
				switch f := f.(type) {
				case *http2.DataFrame:
					got += len(f.Data())
				case *http2.PingFrame:
					if got > 65535 {
						return fmt.Errorf("client sent %d bytes into a connection window of 65535", got)
					}
					opened = true
					return fr.WriteWindowUpdate(0, 1<<20)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if !opened {
				return fmt.Errorf("client sent all %d bytes before the connection window opened", got)
			}
			return answerOK(fr, &cnsv1.RequestIPsResponse{})
		}},
		{"a repeated initial window is no change", windowScript(func(fr *http2.Framer) error {
			for range 2 {
				if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 70000}); err != nil {
					return err
				}
			}
			return fr.WriteWindowUpdate(0, 1<<20)
		}, 70000, func(fr *http2.Framer) error { return fr.WriteWindowUpdate(1, 1<<20) })},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := scripted(t, c.script).Invoke(ctx(t), "/x/y", big, new(cnsv1.RequestIPsResponse)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// An answer far over MaxResponse (and over the window the client gives) fails at once as
// Internal, not after the deadline.
func TestAnswerOverTheBoundFailsAtOnce(t *testing.T) {
	c := scripted(t, func(fr *http2.Framer) error {
		if err := takeRequest(fr); err != nil {
			return err
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":status", "200", "content-type", "application/grpc"), EndHeaders: true}); err != nil {
			return err
		}
		chunk := make([]byte, 16384)
		for range 2048 { // 32 MiB, twice the window: writes fail once the client has gone
			if fr.WriteData(1, false, chunk) != nil {
				return nil
			}
		}
		return nil
	})
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.Invoke(cctx, "/x/y", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
	var e *unary.Error
	if !errors.As(err, &e) || e.Code != unary.Internal || cctx.Err() != nil {
		t.Fatalf("got %v (context %v), want Internal before the deadline", err, cctx.Err())
	}
}

// A server that never answers: the call ends with the caller's deadline, as the context's
// error, and leaves nothing open.
func TestSilentServerEndsAtTheDeadline(t *testing.T) {
	c := scripted(t, func(fr *http2.Framer) error {
		for { // read until the client hangs up; never answer
			if _, err := fr.ReadFrame(); err != nil {
				return nil
			}
		}
	})
	cctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Invoke(cctx, "/x/y", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
}

func TestUnprocessedRequestsAreSentOnceMore(t *testing.T) {
	for _, c := range []struct {
		name  string
		first func(*http2.Framer) error
	}{
		{"REFUSED_STREAM", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeRefusedStream) }},
		{"GOAWAY before our stream", func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var conns int
			conn := scripted(t, func(fr *http2.Framer) error {
				conns++
				if err := takeRequest(fr); err != nil {
					return err
				}
				if conns == 1 {
					return c.first(fr)
				}
				return answerOK(fr, &cnsv1.StatusResponse{Ready: true})
			})
			var got cnsv1.StatusResponse
			if err := conn.Invoke(ctx(t), "/x/y", &cnsv1.StatusRequest{}, &got); err != nil || !got.GetReady() {
				t.Fatalf("got %v, ready %v: want the answer of the second attempt", err, got.GetReady())
			}
		})
	}
	// GOAWAY that covers our stream: the server finishes it, and the answer counts.
	conn := scripted(t, func(fr *http2.Framer) error {
		if err := takeRequest(fr); err != nil {
			return err
		}
		if err := fr.WriteGoAway(1, http2.ErrCodeNo, nil); err != nil {
			return err
		}
		return answerOK(fr, &cnsv1.StatusResponse{Ready: true})
	})
	var got cnsv1.StatusResponse
	if err := conn.Invoke(ctx(t), "/x/y", &cnsv1.StatusRequest{}, &got); err != nil || !got.GetReady() {
		t.Fatalf("GOAWAY after our stream: got %v, ready %v", err, got.GetReady())
	}
}

// Answers that break HTTP/2 (or the order of a response) are protocol errors: neither
// answers nor a server that is not there.
func TestOutOfOrderAnswersAreProtocolErrors(t *testing.T) {
	hdr := func(fields ...string) http2.HeadersFrameParam {
		return http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(fields...), EndHeaders: true}
	}
	for _, c := range []struct {
		name string
		send func(fr *http2.Framer) error
	}{
		{"DATA before HEADERS", func(fr *http2.Framer) error { return fr.WriteData(1, true, grpcFrame(&cnsv1.StatusResponse{})) }},
		{"HEADERS without :status", func(fr *http2.Framer) error {
			p := hdr("content-type", "application/grpc", "grpc-status", "0")
			p.EndStream = true
			return fr.WriteHeaders(p)
		}},
		{"an interim answer that ends the stream", func(fr *http2.Framer) error {
			p := hdr(":status", "103")
			p.EndStream = true
			return fr.WriteHeaders(p)
		}},
		{"trailers that do not end the stream", func(fr *http2.Framer) error {
			if err := fr.WriteHeaders(hdr(":status", "200", "content-type", "application/grpc")); err != nil {
				return err
			}
			return fr.WriteHeaders(hdr("grpc-status", "0"))
		}},
		{"RST_STREAM of the wrong length", func(fr *http2.Framer) error { return fr.WriteRawFrame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 8}) }},
		{"WINDOW_UPDATE of 0", func(fr *http2.Framer) error {
			return fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
		}},
		{"PUSH_PROMISE though push is off", func(fr *http2.Framer) error {
			return fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: block(":method", "GET"), EndHeaders: true})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := scripted(t, func(fr *http2.Framer) error {
				if err := takeRequest(fr); err != nil {
					return err
				}
				return c.send(fr)
			})
			err := conn.Invoke(ctx(t), "/x/y", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
			if !errors.Is(err, unary.ErrProtocol) || errors.Is(err, unary.ErrTransport) {
				t.Fatalf("got %v, want a protocol error", err)
			}
		})
	}
}
