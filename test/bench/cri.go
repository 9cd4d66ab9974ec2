package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vnet-cni/vnet-cni/test/image"
	"github.com/vnet-cni/vnet-cni/test/k8s"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// CRI is containerd's RunPodSandbox and StopPodSandbox through crictl, ours vs the reference.
type CRI struct {
	Containerd string  `json:"containerd"`
	Iterations int     `json:"iterations"`
	Run        Latency `json:"run_pod_sandbox_ms"`
	Stop       Latency `json:"stop_pod_sandbox_ms"`
}

const pauseImage = "localhost/pause:bench"

// cri: one containerd (Debian's, with runc) in an emulated node's network namespace and a
// private mount namespace, two runtime handlers that differ only in their CNI conf dir (ours,
// ref). crictl alternates RunPodSandbox and StopPodSandbox on them; the pause image is built
// here from the static pause binary.
func cri(ctx context.Context, c Config, r *Results) error {
	if c.Pause == "" || c.CRICtl == "" {
		return errors.New("--pause and --crictl are required (make bench builds and installs them)")
	}
	v, err := newVNet(c, "cri", nil, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	d, err := filepath.Abs(filepath.Join(c.WorkDir, "cri"))
	if err != nil {
		return err
	}
	if err := criDirs(c, d, n); err != nil {
		return err
	}
	if err := pauseTarball(c.Pause, filepath.Join(d, "pause.tar")); err != nil {
		return err
	}
	ct, err := startContainerd(ctx, d, n)
	if err != nil {
		return err
	}
	defer ct.stop()
	if out, err := exec.CommandContext(ctx, "ctr", "-a", ct.sock, "-n", "k8s.io", "images", "import", filepath.Join(d, "pause.tar")).CombinedOutput(); err != nil {
		return fmt.Errorf("import pause image: %w: %s", err, out)
	}
	crictl := func(args ...string) (string, time.Duration, error) {
		args = append([]string{"--runtime-endpoint", "unix://" + ct.sock, "--image-endpoint", "unix://" + ct.sock, "--timeout", "60s"}, args...)
		cmd := exec.CommandContext(ctx, c.CRICtl, args...)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err != nil {
			return "", 0, fmt.Errorf("crictl %v: %w: %s%s\ncontainerd log: %s", args[6:], err, out.String(), stderr.String(), ct.logTail())
		}
		return strings.TrimSpace(out.String()), took, nil
	}
	// Sandboxes' cgroups go under one parent of this run, removed at the end.
	cgroup := fmt.Sprintf("/vnet-bench-%d", os.Getpid())
	defer removeCgroups(cgroup)
	defer crictl("rmp", "--all", "--force") //nolint:errcheck // best effort before containerd stops
	iters := max(c.Iterations/5, 10)
	var runO, runR, stopO, stopR []float64
	for i := range iters + 2 {
		for _, handler := range []string{"ours", "ref"} {
			pod := filepath.Join(d, "pod.json")
			conf := fmt.Sprintf(`{"metadata":{"name":"bench-%s-%d","namespace":"bench","uid":"uid-%s-%d","attempt":0},"log_directory":%q,"linux":{"cgroup_parent":%q}}`,
				handler, i, handler, i, filepath.Join(d, "logs"), cgroup)
			if err := os.WriteFile(pod, []byte(conf), 0o644); err != nil {
				return err
			}
			id, run, err := crictl("runp", "--runtime", handler, pod)
			if err != nil {
				return err
			}
			_, stop, err := crictl("stopp", id)
			if err != nil {
				return err
			}
			if _, _, err := crictl("rmp", id); err != nil {
				return err
			}
			if i < 2 { // warm-up
				continue
			}
			if handler == "ours" {
				runO, stopO = append(runO, ms(run)), append(stopO, ms(stop))
			} else {
				runR, stopR = append(runR, ms(run)), append(stopR, ms(stop))
			}
		}
	}
	version, _ := exec.Command("containerd", "--version").Output()
	r.CRI = &CRI{Containerd: strings.TrimSpace(string(version)), Iterations: iters, Run: summary(runO, runR), Stop: summary(stopO, stopR)}
	return nil
}

// criDirs writes containerd's CNI side: one bin dir with all plugins, one conf dir per handler.
func criDirs(c Config, d string, n *vnet.Node) error {
	for _, sub := range []string{"cni-bin", "net.d/ours", "net.d/ref", "varlib", "logs"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	bins := map[string]string{"vnet-cni": c.BinDir, "ptp": c.RefDir, "host-local": c.RefDir, "loopback": c.RefDir}
	for bin, dir := range bins {
		src, err := filepath.Abs(filepath.Join(dir, bin))
		if err != nil {
			return err
		}
		dst := filepath.Join(d, "cni-bin", bin)
		_ = os.Remove(dst)
		if err := os.Symlink(src, dst); err != nil {
			return err
		}
	}
	// containerd 1.6's libcni reads configurations up to CNI 1.0.0.
	ours := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ours","plugins":[{"type":"vnet-cni","cnsSocket":%q,"releaseSpool":%q}]}`,
		n.Socket, filepath.Join(n.Dir, "spool"))
	ref := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ref","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,
		"ipam":{"type":"host-local","subnet":"10.200.0.0/16","dataDir":%q}}]}`, filepath.Join(d, "host-local"))
	if err := os.WriteFile(filepath.Join(d, "net.d/ours/10-ours.conflist"), []byte(ours), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d, "net.d/ref/10-ref.conflist"), []byte(ref), 0o644)
}

// pauseTarball packs the static pause binary as /pause into a one-layer image tarball that
// `ctr images import` reads.
func pauseTarball(bin, out string) error {
	_, err := image.Build(pauseImage, []image.File{{Src: bin, Dst: "/pause", Mode: 0o755}}, []string{"/pause"}, out)
	return err
}

// containerd runs in the node's network namespace and a private mount namespace (held by
// a sleeping process), where /run is a tmpfs and /var/lib a directory of the run: shim
// sockets, pod network namespaces and the CNI cache stay off the host.
type containerd struct {
	sock, log string
	mnt       *k8s.MountNS
	cmd       *exec.Cmd
}

func startContainerd(ctx context.Context, d string, n *vnet.Node) (*containerd, error) {
	ct := &containerd{sock: filepath.Join(d, "containerd.sock"), log: filepath.Join(d, "containerd.log")}
	setup := fmt.Sprintf("mount -t tmpfs tmpfs /run && mount --bind %s /var/lib", filepath.Join(d, "varlib"))
	var err error
	if ct.mnt, err = k8s.NewMountNS(setup); err != nil {
		return nil, err
	}
	toml := k8s.ContainerdConfig{
		Root: filepath.Join(d, "root"), State: filepath.Join(d, "state"), Opt: filepath.Join(d, "opt"),
		Socket: ct.sock, SandboxImage: pauseImage, RuncRoot: filepath.Join(d, "runc"),
		CNIBinDir: filepath.Join(d, "cni-bin"), CNIConfDir: filepath.Join(d, "net.d/ours"),
		Handlers: []k8s.Handler{{Name: "ours", ConfDir: filepath.Join(d, "net.d/ours")}, {Name: "ref", ConfDir: filepath.Join(d, "net.d/ref")}},
	}.TOML()
	conf := filepath.Join(d, "containerd.toml")
	if err := os.WriteFile(conf, []byte(toml), 0o644); err != nil {
		ct.stop()
		return nil, err
	}
	logf, err := os.Create(ct.log)
	if err != nil {
		ct.stop()
		return nil, err
	}
	defer logf.Close()
	enter := ct.mnt.Enter(n.NS.Path())
	ct.cmd = exec.Command(enter[0], append(enter[1:], "containerd", "--config", conf)...)
	ct.cmd.Stdout, ct.cmd.Stderr = logf, logf
	if err := ct.cmd.Start(); err != nil {
		ct.stop()
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if err := k8s.Poll(30*time.Second, func() bool {
		return exec.CommandContext(ctx, "ctr", "-a", ct.sock, "version").Run() == nil
	}); err != nil {
		ct.stop()
		return nil, fmt.Errorf("containerd not up: %w\n%s", err, ct.logTail())
	}
	return ct, nil
}

func (ct *containerd) logTail() string {
	b, _ := os.ReadFile(ct.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// stop ends containerd (SIGTERM, SIGKILL after 10 s), then the mount namespace.
func (ct *containerd) stop() {
	defer ct.mnt.Close()
	for _, cmd := range []*exec.Cmd{ct.cmd} {
		if cmd == nil || cmd.Process == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
}

// removeCgroups removes the (by then empty) cgroup parent from every hierarchy.
func removeCgroups(parent string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if d := filepath.Join("/sys/fs/cgroup", parent); exists(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		_ = os.Remove(d)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
