package unary_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
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
func scripted(t *testing.T, script func(fr *http2.Framer) error) *unary.Conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "h2.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
			done <- fmt.Errorf("client preface %q: %v", preface, err)
			return
		}
		done <- script(http2.NewFramer(conn, conn))
	}()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("server script: %v", err)
		}
	})
	return unary.Dial(sock)
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
		code      codes.Code // the answer; OK means a transport error
		transport bool
	}{
		{"RST_STREAM REFUSED_STREAM", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeRefusedStream) }, codes.Unavailable, false},
		{"RST_STREAM CANCEL", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) }, codes.Canceled, false},
		{"RST_STREAM INTERNAL_ERROR", func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeInternal) }, codes.Internal, false},
		{"GOAWAY before our stream", func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) }, codes.OK, true},
		{"PUSH_PROMISE though push is off", func(fr *http2.Framer) error {
			return fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: block(":method", "GET"), EndHeaders: true})
		}, codes.OK, true},
		{"closed without an answer", func(*http2.Framer) error { return nil }, codes.OK, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := scripted(t, func(fr *http2.Framer) error {
				if err := fr.WriteSettings(); err != nil {
					return err
				}
				if _, err := readRequest(fr, nil); err != nil {
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
