package plugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// cns replays a record by reading its file and then removing that file. A DEL spooled for
// the same key in between must survive the removal.
func TestSpoolReplayNeverDeletesANewerRecord(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older, err := spoolRelease(dir, "vnet", "c", "eth0", t0)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := spoolRelease(dir, "vnet", "c", "eth0", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(older); err != nil { // the replay of the older record
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 1 || files[0] != newer {
		t.Fatalf("spool after replaying the older record: %v, want the newer record %s", files, newer)
	}
	b, _ := os.ReadFile(newer)
	var r contract.SpoolRecord
	if err := json.Unmarshal(b, &r); err != nil || !r.At.Equal(t0.Add(time.Second)) || r.Network != "vnet" {
		t.Fatalf("newer record %s: %+v %v", b, r, err)
	}
}
