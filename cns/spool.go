package cns

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// replaySpool releases every spooled key whose allocation is older than the record (a newer
// allocation belongs to a later ADD of the same key and must be kept), then removes the file.
func (m *Manager) replaySpool(dir string) {
	if dir == "" {
		return
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Error("read release spool", "dir", dir, "err", err)
		}
		return
	}
	for _, f := range files {
		if f.IsDir() || !strings.HasSuffix(f.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, f.Name())
		b, err := os.ReadFile(path)
		var r cnsv1.SpoolRecord
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			m.log.Error("unreadable spooled release; removing it", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		k := ipampool.Key{ContainerID: r.ContainerID, IfName: r.IfName}
		if g, ok := m.Lookup(k); ok && g.Entry.AssignedAt.Before(r.At) {
			if _, err := m.ReleaseNetworkIP(k, r.Network); err != nil { // "" (older plugins): any network
				m.log.Error("replay spooled release; will retry", "containerID", k.ContainerID, "err", err)
				continue
			}
			m.log.Info("replayed spooled release", "containerID", k.ContainerID, "ifname", k.IfName, "addr", g.Entry.Addr)
		}
		if err := os.Remove(path); err != nil {
			m.log.Error("remove spooled release", "file", path, "err", err)
		}
	}
}
