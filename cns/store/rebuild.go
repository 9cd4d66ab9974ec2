package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// rebuildFault lets tests interrupt a rebuild at a named step, as a crash or a full disk would.
var rebuildFault = func(step string) error { return nil }

// Steps of a rebuild, in order, at which rebuildFault is consulted.
const (
	stepCopied  = "copied"  // the damaged file is kept under its corrupt-<time> name
	stepCreated = "created" // the temporary file exists, still empty
	stepWritten = "written" // every allocation is committed to the temporary file
	stepSynced  = "synced"  // the temporary file is closed and flushed, not yet renamed
)

// replaceCorrupt keeps a copy of the damaged file at path, builds its replacement in a
// temporary file in the same directory and renames it over path as the very last step. At
// every earlier point path still holds the damaged file, which the next start rebuilds again.
func replaceCorrupt(path, stamp string, rebuild RebuildFunc) (movedAside string, err error) {
	movedAside = path + ".corrupt-" + stamp
	if err := keepCopy(path, movedAside); err != nil {
		return "", fmt.Errorf("keep a copy of the damaged file: %w", err)
	}
	if err := rebuildFault(stepCopied); err != nil {
		return "", err
	}
	if err := buildInPlace(path, rebuild); err != nil {
		return "", err
	}
	return movedAside, nil
}

// buildInPlace builds a state file holding what rebuild returns in a temporary file beside
// path and renames it to path as the very last step, so a crash, a full disk or a failed
// rebuild half-way leaves path as it was (damaged, or absent) for the next start to redo.
func buildInPlace(path string, rebuild RebuildFunc) (err error) {
	var allocs []Allocation
	if rebuild != nil {
		if allocs, err = rebuild(); err != nil {
			return fmt.Errorf("read what to rebuild: %w", err)
		}
	}
	tmp := path + ".rebuild"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove an earlier unfinished rebuild: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := writeFresh(tmp, allocs); err != nil {
		return err
	}
	if err := rebuildFault(stepSynced); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("put the rebuilt state in place: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// writeFresh creates a new state file at path holding allocs, committed in one transaction
// and flushed before it returns.
func writeFresh(path string, allocs []Allocation) error {
	db, _, err := openDB(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := rebuildFault(stepCreated); err != nil {
		db.Close()
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAllocations)
		for _, a := range allocs {
			v, err := encodeAllocation(a)
			if err != nil {
				return fmt.Errorf("encode allocation of %s: %w", a.Addr, err)
			}
			if err := b.Put(allocKey(a.Owner.Key), v); err != nil {
				return err
			}
		}
		return rebuildFault(stepWritten)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write rebuilt state: %w", err)
	}
	return nil
}

// keepCopy makes dst a copy of src: a hard link when the filesystem allows, else a copy.
// The state file is never written again once damaged, so a link is a faithful copy.
func keepCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// copyFile copies src to a new file dst and flushes it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
