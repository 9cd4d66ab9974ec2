package k8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// Options tune a control plane; zero values are test defaults.
type Options struct {
	// AdvertiseAddress is the address the apiserver publishes for the kubernetes Service. It
	// refuses a loopback one; the default is 192.0.2.1 (TEST-NET-1, reaches nothing). A
	// cluster with nodes passes an address its nodes reach.
	AdvertiseAddress string
	// ExtraAPIServerArgs are appended to kube-apiserver's arguments.
	ExtraAPIServerArgs []string
	// Dir is the run directory; default a new temporary one.
	Dir string
	// ReadyTimeout bounds the wait for /readyz (default 60 s: a loaded 2-core machine).
	ReadyTimeout time.Duration
}

// ControlPlane is a running etcd + kube-apiserver, serving https on 127.0.0.1.
type ControlPlane struct {
	Dir             string // everything of this run: certificates, etcd data, logs
	Bins            string
	URL             string
	PKI             *PKI
	SAKey, SAPub    string // service-account signing key pair
	AdminKubeconfig string // system:masters, client certificate
	Admin           *rest.Config
	Client          kubernetes.Interface

	procs []*process
}

// Start runs etcd and kube-apiserver with --authorization-mode=Node,RBAC, waits for /readyz,
// and registers a cleanup that stops both and removes Dir (logs are copied to the test log
// first when the test failed). Binaries missing: see RequireBins.
func Start(t testing.TB, o Options) *ControlPlane {
	t.Helper()
	bins := RequireBins(t)
	cp, err := start(bins, o)
	if cp != nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, p := range cp.procs {
					t.Logf("--- %s log (tail) ---\n%s", p.name, p.tail(4000))
				}
			}
			cp.Close()
		})
	}
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	return cp
}

// StartControlPlane is Start outside a test: the caller closes it, also on error.
func StartControlPlane(o Options) (*ControlPlane, error) {
	if err := missing(BinDir(), controlPlaneBins); err != nil {
		return nil, err
	}
	return start(BinDir(), o)
}

func start(bins string, o Options) (*ControlPlane, error) {
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = "192.0.2.1"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "vnetk8s-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cp := &ControlPlane{Dir: dir, Bins: bins}
	pki, err := NewPKI(dir)
	if err != nil {
		return cp, err
	}
	cp.PKI = pki
	srvCert, srvKey, err := pki.Issue(CertSpec{Name: "apiserver", CN: "kube-apiserver", Server: true,
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(o.AdvertiseAddress), net.IPv4(10, 96, 0, 1)},
		DNS: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}})
	if err != nil {
		return cp, err
	}
	if cp.SAKey, cp.SAPub, err = pki.ServiceAccountKeys(); err != nil {
		return cp, err
	}
	// kubectl logs/exec: the apiserver authenticates to kubelets with this certificate.
	kcCert, kcKey, err := pki.Issue(CertSpec{Name: "apiserver-kubelet-client", CN: "kube-apiserver-kubelet-client", Groups: []string{"system:masters"}})
	if err != nil {
		return cp, err
	}
	ports, err := nettest.FreeLoopbackPorts(3)
	if err != nil {
		return cp, err
	}
	etcdURL, peerURL := "http://127.0.0.1:"+strconv.Itoa(ports[0]), "http://127.0.0.1:"+strconv.Itoa(ports[1])
	cp.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	etcd, err := startProcess(dir, "etcd", filepath.Join(bins, "etcd"), "--name", "test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "test="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return cp, err
	}
	cp.procs = append(cp.procs, etcd)
	args := []string{"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[2]),
		"--advertise-address=" + o.AdvertiseAddress, "--tls-cert-file=" + srvCert, "--tls-private-key-file=" + srvKey,
		"--client-ca-file=" + pki.CAFile, "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + cp.SAPub, "--service-account-signing-key-file=" + cp.SAKey,
		"--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--kubelet-client-certificate=" + kcCert, "--kubelet-client-key=" + kcKey, "--kubelet-preferred-address-types=InternalIP"}
	api, err := startProcess(dir, "kube-apiserver", filepath.Join(bins, "kube-apiserver"), append(args, o.ExtraAPIServerArgs...)...)
	if err != nil {
		return cp, err
	}
	cp.procs = append(cp.procs, api)

	if cp.AdminKubeconfig, err = cp.Kubeconfig("admin", "admin", "system:masters"); err != nil {
		return cp, err
	}
	if cp.Admin, err = clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig); err != nil {
		return cp, err
	}
	if cp.Client, err = kubernetes.NewForConfig(cp.Admin); err != nil {
		return cp, err
	}
	return cp, cp.waitReady(o.ReadyTimeout)
}

// waitReady polls /readyz until it answers ok, a process exits, or within passes.
func (cp *ControlPlane) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range cp.procs {
			if ok, err := p.exited(); ok {
				return fmt.Errorf("%s exited (%v): %s", p.name, err, p.tail(2000))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, last = cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("/readyz not ok within %s: %w", within, last)
}

// Kubeconfig writes a kubeconfig for user in groups, authenticated by a client certificate
// the cluster CA signs, and returns its path.
func (cp *ControlPlane) Kubeconfig(name, user string, groups ...string) (string, error) {
	return cp.KubeconfigAt(cp.URL, name, user, groups...)
}

// KubeconfigAt is Kubeconfig for a client that reaches the apiserver at server (a node in
// its namespace uses the advertised address).
func (cp *ControlPlane) KubeconfigAt(server, name, user string, groups ...string) (string, error) {
	cert, key, err := cp.PKI.Issue(CertSpec{Name: "user-" + name, CN: user, Groups: groups})
	if err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: cp.PKI.CAFile}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: name}
	cfg.CurrentContext = "test"
	path := filepath.Join(cp.Dir, name+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// Kubectl runs the pinned kubectl as admin and returns its combined output.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(cp.Bins, "kubectl"), append([]string{"--kubeconfig", cp.AdminKubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %v: %w\n%s", args, err, out)
	}
	return out, nil
}

// Namespace creates namespace name with its "default" ServiceAccount, which the
// ServiceAccount admission plugin requires of every pod and which, without a
// kube-controller-manager, nobody else creates.
func (cp *ControlPlane) Namespace(ctx context.Context, name string) error {
	_, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, err = cp.Client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// Close stops the apiserver, then etcd, and removes Dir. Safe to call twice.
func (cp *ControlPlane) Close() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].stop(10 * time.Second)
	}
	cp.procs = nil
	if cp.Dir != "" {
		if err := os.RemoveAll(cp.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "remove %s: %v\n", cp.Dir, err)
		}
	}
}
