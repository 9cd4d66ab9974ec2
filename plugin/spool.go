package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// spoolRelease durably records a release cns could not take: written to a temporary file,
// synced, then renamed, so cns never reads half a record.
func spoolRelease(dir, containerID, ifname string, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create release spool: %w", err)
	}
	b, err := json.Marshal(cnsv1.SpoolRecord{ContainerID: containerID, IfName: ifname, At: now.UTC()})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	path := filepath.Join(dir, hex.EncodeToString(sum[:16])+".json")
	f, err := os.CreateTemp(dir, ".spool-*")
	if err != nil {
		return "", fmt.Errorf("spool release: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("spool release: %w", err)
	}
	return path, nil
}
