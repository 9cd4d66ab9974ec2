package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// DemoPrefix names the Kubernetes demo's namespaces and cgroups.
const DemoPrefix = "vk8sdemo"

// DemoConfig is make demo-k8s's command line.
type DemoConfig struct {
	WorkDir string
	Image   string // node image tarball (make image); empty builds one
	Down    bool   // tear down a running or crashed demo instead
	Wait    bool   // stay up until ctx ends
}

const demoWorkload = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - {name: agent, image: ` + WorkloadImage + `, imagePullPolicy: Never, command: [/agent, serve], ports: [{containerPort: 8080}]}
`

// RunDemo brings up the 2-node cluster with vnet-cni deployed and a 4-replica workload,
// tells on w how to look at it, waits for ctx when c.Wait, and tears everything down.
func RunDemo(ctx context.Context, w io.Writer, c DemoConfig) (err error) {
	if c.WorkDir, err = filepath.Abs(c.WorkDir); err != nil {
		return err
	}
	if err := DemoDown(c.WorkDir); err != nil || c.Down {
		return err
	}
	start := time.Now()
	if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
		return err
	}
	_ = os.WriteFile(filepath.Join(c.WorkDir, "demo.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	defer os.Remove(filepath.Join(c.WorkDir, "demo.pid"))
	repo, err := RepoRoot()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "building the workload image (pause + agent) and the node's CNI plugins...")
	im, err := BuildImages(ctx, repo, filepath.Join(c.WorkDir, "images"), c.Image)
	if err != nil {
		return err
	}
	cl, err := NewCluster(ctx, ClusterOptions{Prefix: DemoPrefix, WorkDir: filepath.Join(c.WorkDir, "cluster"), Nodes: 2, Images: im})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(w, "tearing down: kubelets, containerd and their containers, control plane, namespaces")
		err = errors.Join(err, cl.Close())
	}()
	fmt.Fprintf(w, "control plane up; nodes registered NotReady (no CNI configuration yet): %s\n", nodeNames(cl))
	if err := cl.Deploy(ctx, nil); err != nil {
		return err
	}
	if err := cl.WaitNodes(ctx, true, 3*time.Minute); err != nil {
		return err
	}
	fmt.Fprintln(w, "kubectl apply -f cns/deploy/rbac.yaml -f cns/deploy/daemonset.yaml: cns + install-cni on every node; nodes Ready")
	web := filepath.Join(c.WorkDir, "web.yaml")
	if err := os.WriteFile(web, []byte(demoWorkload), 0o644); err != nil {
		return err
	}
	if _, err := cl.CP.Kubectl(ctx, "apply", "-f", web); err != nil {
		return err
	}
	if err := waitDeployment(ctx, cl, "web", 4, 2*time.Minute); err != nil {
		return err
	}
	printDemo(w, cl, web, time.Since(start))
	if !c.Wait {
		return nil
	}
	fmt.Fprintln(w, "Ctrl-C (or make demo-k8s-down) tears it all down.")
	<-ctx.Done()
	return nil
}

func nodeNames(cl *Cluster) string {
	var s []string
	for _, n := range cl.Nodes {
		s = append(s, n.Cfg.Name+" "+n.Cfg.IP.String())
	}
	return strings.Join(s, ", ")
}

func waitDeployment(ctx context.Context, cl *Cluster, name string, want int32, within time.Duration) error {
	return Poll(within, func() bool {
		d, err := cl.CP.Client.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == want
	})
}

func printDemo(w io.Writer, cl *Cluster, web string, took time.Duration) {
	k := filepath.Join(cl.CP.Bins, "kubectl")
	fmt.Fprintf(w, "\nup in %s. VNet %s, gateway %s (mockarm: ARM + IMDS; the apiserver is reachable there too)\n",
		took.Round(100*time.Millisecond), cl.VNet.MockCfg.Subnet, cl.VNet.Gateway)
	fmt.Fprintf(w, "\nTry:\n  export KUBECONFIG=%s\n", cl.CP.AdminKubeconfig)
	fmt.Fprintf(w, "  %s get nodes -o wide                 # node IPs are the VNet primaries\n", k)
	fmt.Fprintf(w, "  %s get pods -A -o wide               # pod IPs come from the VNet subnet\n", k)
	fmt.Fprintf(w, "  %s -n kube-system logs ds/cns -c cns  # cns: IMDS, managed identity, NIC\n", k)
	fmt.Fprintf(w, "  %s exec deploy/web -- /agent get http://<another pod IP>:8080/   # answers with its name and YOUR pod IP\n", k)
	fmt.Fprintf(w, "  %s scale deploy/web --replicas=20     # the pool grows on the NIC (workload: %s)\n", k, web)
	for _, n := range cl.Nodes {
		fmt.Fprintf(w, "  grpcurl -plaintext unix://%s cns.v1.PoolService/ListAllocations   # %s's allocations\n", n.Path("/run/cns/cns.sock"), n.Cfg.Name)
	}
	fmt.Fprintf(w, "  nsenter --net=%s ip route            # node1: a /32 per pod\n", cl.Nodes[0].Cfg.NetNS)
	fmt.Fprintf(w, "  nsenter --net=/var/run/netns/%s-vnet ip route   # the VNet fabric: pod /32 via node primary\n", DemoPrefix)
	fmt.Fprintf(w, "Logs: %s/{cp,vnet/node*/k8s}/*.log\n\n", cl.Opts.WorkDir)
}

// DemoDown stops a running demo (SIGTERM to its process, which tears down), then removes
// whatever a crashed one left: its processes (by their files under workDir), containers,
// namespaces, cgroups and files.
func DemoDown(workDir string) error {
	if b, err := os.ReadFile(filepath.Join(workDir, "demo.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && pid > 1 {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), "vnet-k8s-demo") {
				_ = syscall.Kill(pid, syscall.SIGTERM)
				_ = Poll(90*time.Second, func() bool { return syscall.Kill(pid, 0) != nil })
			}
		}
	}
	if workDir == "" || filepath.Clean(workDir) == "/" {
		return fmt.Errorf("demo work directory %q: refusing to sweep it", workDir)
	}
	// Only the cluster's own directory marks the demo's processes (their files, their mounts):
	// anything else that merely names the work directory is left alone.
	mark := filepath.Join(workDir, "cluster") + "/"
	errs := []error{killMarked(func() map[int]string { return processesMarked(mark, true) })}
	for _, n := range []string{"node1", "node2"} {
		if len(cgroupDirs("/"+DemoPrefix+"-"+n)) > 0 {
			errs = append(errs, killCgroup("/"+DemoPrefix+"-"+n))
		}
	}
	errs = append(errs, vnet.SweepPrefix(DemoPrefix+"-"))
	for _, d := range []string{"cluster", "images", "demo.pid"} {
		errs = append(errs, os.RemoveAll(filepath.Join(workDir, d)))
	}
	return errors.Join(errs...)
}
