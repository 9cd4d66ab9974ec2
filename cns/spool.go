package cns

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnet-cni/vnet-cni/ipampool"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// replaySpool releases every spooled key whose allocation is older than the record (a newer
// allocation belongs to a later ADD of the same key and must be kept), then removes the file.
// It runs at startup before requests are answered and on the loop after each reconcile, and
// never waits on a key lock: a key in use is left for the next replay.
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
		var r contract.SpoolRecord
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			m.log.Error("unreadable spooled release; removing it", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		k := ipampool.Key{ContainerID: r.ContainerID, IfName: r.IfName}
		if !m.replayOne(k, r.Network, r.At, path) {
			continue
		}
		if err := os.Remove(path); err != nil {
			m.log.Error("remove spooled release", "file", path, "err", err)
		}
	}
}

// replayOne applies one record; false keeps the file for a later replay. The age check and
// the release happen under k's key lock, so an ADD of the same key between them (whose newer
// allocation the record does not concern) cannot be released by mistake.
func (m *Manager) replayOne(k ipampool.Key, network string, at time.Time, path string) bool {
	unlock, ok := m.keys.tryLock(k)
	if !ok {
		m.log.Info("spooled release: key in use, replaying later", "containerID", k.ContainerID, "ifname", k.IfName)
		return false
	}
	defer unlock()
	g, ok := m.Lookup(k)
	if !ok || !g.Entry.AssignedAt.Before(at) {
		return true
	}
	if _, err := m.releaseHeld(k, network); err != nil { // "" (older plugins): any network
		m.log.Error("replay spooled release; will retry", "containerID", k.ContainerID, "file", path, "err", err)
		return false
	}
	m.log.Info("replayed spooled release", "containerID", k.ContainerID, "ifname", k.IfName, "addr", g.Entry.Addr)
	return true
}
