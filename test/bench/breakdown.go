package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnet-cni/vnet-cni/plugin"
	"github.com/vnet-cni/vnet-cni/plugin/cnswire"
)

// breakdown prices the parts of one ADD/DEL apart, on the latency step's cns: process
// start and package init of each binary (CNI VERSION does nothing else), cnitool's own
// start, a fresh gRPC connection plus one call with no disk work (Status), RequestIPs and
// ReleaseIPs as the plugin makes them (each on its own connection: cns's handling and its
// fsynced commit), and an fsync on the state's disk. The datapath floor is measured by floor.
func breakdown(ctx context.Context, c Config, r *Results) error {
	v, err := newVNet(c, "parts", nil, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	execs := []struct {
		name string
		cmd  []string
		dst  *float64
	}{
		{"vnet-cni", []string{filepath.Join(c.BinDir, "vnet-cni")}, &r.Parts.ExecOurs},
		{"ptp", []string{filepath.Join(c.RefDir, "ptp")}, &r.Parts.ExecPTP},
		{"host-local", []string{filepath.Join(c.RefDir, "host-local")}, &r.Parts.ExecHostLocal},
		{"cnitool", []string{c.CNITool}, &r.Parts.ExecCNITool},
		{"/bin/true", []string{"/bin/true"}, &r.Parts.ExecTrue},
	}
	samples := make([][]float64, len(execs))
	for range c.Iterations {
		for i, e := range execs {
			cmd := exec.CommandContext(ctx, e.cmd[0], e.cmd[1:]...)
			cmd.Env = []string{"CNI_COMMAND=VERSION"}
			cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
			start := time.Now()
			_ = cmd.Run() // cnitool without arguments exits 1 after printing its usage
			samples[i] = append(samples[i], ms(time.Since(start)))
		}
	}
	for i, e := range execs {
		*e.dst = quantile(samples[i], 0.5)
	}
	conf := &plugin.Config{CNSSocket: n.Socket}
	// RequestIPs and ReleaseIPs through the plugin's own client, which connects per call.
	cns, err := plugin.DialCNS(conf)
	if err != nil {
		return err
	}
	defer cns.Close()
	var dial, req, rel []float64
	for i := range c.Iterations {
		start := time.Now()
		client, err := plugin.DialCNS(conf)
		if err != nil {
			return err
		}
		if _, err := client.Status(ctx); err != nil {
			return err
		}
		client.Close()
		dial = append(dial, ms(time.Since(start)))
		id := fmt.Sprint("parts-", i)
		start = time.Now()
		if _, err := cns.RequestIPs(ctx, cnswire.IPRequest{ContainerID: id, IfName: "eth0"}); err != nil {
			return err
		}
		req = append(req, ms(time.Since(start)))
		start = time.Now()
		if err := cns.ReleaseIPs(ctx, "", id, "eth0"); err != nil {
			return err
		}
		rel = append(rel, ms(time.Since(start)))
	}
	r.Parts.DialCall, r.Parts.RequestIPs, r.Parts.ReleaseIPs = quantile(dial, 0.5), quantile(req, 0.5), quantile(rel, 0.5)
	return nil
}

// stateDisk names the file system under dir and the median time of an fsync there (4 KiB
// rewritten and synced, as a small bbolt commit does).
func stateDisk(dir string) (string, float64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", 0, err
	}
	fs := map[int64]string{unix.TMPFS_MAGIC: "tmpfs", unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs",
		unix.BTRFS_SUPER_MAGIC: "btrfs", unix.OVERLAYFS_SUPER_MAGIC: "overlayfs"}[int64(st.Type)]
	if fs == "" {
		fs = fmt.Sprintf("fs 0x%x", st.Type)
	}
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return fs, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var d []float64
	for i := range 100 {
		if _, err := f.WriteAt(buf, int64(i%8)*4096); err != nil {
			return fs, 0, err
		}
		start := time.Now()
		if err := f.Sync(); err != nil {
			return fs, 0, err
		}
		d = append(d, ms(time.Since(start)))
	}
	return fs, quantile(d, 0.5), nil
}
