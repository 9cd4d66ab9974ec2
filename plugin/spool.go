package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// spoolRelease durably records a release cns could not take: written to a temporary file,
// synced, renamed, and the directory synced, so cns never reads half a record and a crash
// after DEL returned cannot lose the rename.
//
// Every record gets a file of its own, named by its key and time: cns removes exactly the file
// it replayed, so a newer record of the same key (a DEL spooled while cns was replaying an
// older one) is never deleted unread. Records are contract.SpoolRecord; Network was added later
// and is omitted by older plugins, which cns reads as "any network".
func spoolRelease(dir, network, containerID, ifname string, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create release spool: %w", err)
	}
	at := now.UTC()
	b, err := json.Marshal(contract.SpoolRecord{ContainerID: containerID, IfName: ifname, At: at, Network: network})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	path := filepath.Join(dir, fmt.Sprintf("%s-%019d.json", hex.EncodeToString(sum[:16]), at.UnixNano()))
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
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return "", fmt.Errorf("spool release: %w", err)
	}
	return path, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
