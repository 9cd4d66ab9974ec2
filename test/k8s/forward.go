package k8s

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// relay serves connections accepted on a listener by dialling a peer per connection and
// copying both ways; Close stops accepting and cuts every open connection.
type relay struct {
	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (r *relay) track(c net.Conn, add bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

func (r *relay) serve(handle func(net.Conn)) {
	r.conns = map[net.Conn]struct{}{}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.l.Accept()
			if err != nil {
				return
			}
			r.track(c, true)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer r.track(c, false)
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

func (r *relay) Close() error {
	err := r.l.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

// pipe copies a→b and b→a until either side ends.
func pipe(a io.ReadWriter, b net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }()
	<-done
}

// forwardIntoNS listens on addr inside netns n and forwards every connection to target,
// dialled from this process's own namespace: the apiserver on loopback appears at an
// address of the emulated VNet.
func forwardIntoNS(n ns.NetNS, addr, target string) (*relay, error) {
	l, err := mockarm.ListenInNS(n, addr)
	if err != nil {
		return nil, err
	}
	r := &relay{l: l}
	r.serve(func(c net.Conn) {
		up, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			return
		}
		defer up.Close()
		pipe(c, up)
	})
	return r, nil
}

// connectProxy is the apiserver's egress for "cluster" traffic (kubectl logs, exec,
// port-forward reach kubelets): HTTP CONNECT on a unix socket, dialled inside netns n,
// from where every node address routes.
func connectProxy(sock string, n ns.NetNS) (*relay, error) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	r := &relay{l: l}
	r.serve(func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
			return
		}
		var up net.Conn
		err = n.Do(func(ns.NetNS) (err error) { up, err = net.DialTimeout("tcp", req.Host, 5*time.Second); return err })
		if err != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
		pipe(struct {
			io.Reader
			io.Writer
		}{br, c}, up)
	})
	return r, nil
}
