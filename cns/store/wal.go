package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The log holds the changes committed since the last checkpoint, one record per group:
//
//	file:    magic "vcl1" (names the format) | salt uint32 LE (drawn anew at every reset) | record ...
//	record:  length uint32 LE | crc32c(salt, payload) uint32 LE | payload (length bytes)
//	payload: op ...
//	op:      bucket<<1 | delete (one byte) | key | [value]   (each protowire bytes: uvarint length, bytes)
//
// A record is written with one write and made durable with one fdatasync before any commit in
// it is acknowledged. Only the last record can be torn by a crash; see readLog. The salt makes
// a record of an earlier generation (blocks the filesystem reused after a reset and exposed
// after a crash, as ext4 without a journal can) fail its checksum instead of being replayed.
//
// The file is kept logSpace bytes long, zeros after the last record, so a record overwrites
// blocks the file already has: the file's size never changes on the commit path, and the
// fdatasync after a record writes the record's pages without the inode's size and block map
// (one device write fewer per group; see reset). A log that outgrows logSpace (a checkpoint
// that keeps failing) simply grows.
const (
	logHeader    = 8
	recordHeader = 8
	// logSpace is the log file's length: room for checkpointBytes and the largest group that
	// crosses it.
	logSpace = 2 * checkpointBytes
)

// zeros is what reset writes over the records it drops, a block at a time.
var zeros [64 << 10]byte

var logMagic = [4]byte{'v', 'c', 'l', '1'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writeLog and truncateLog reach the log file; tests make them fail as a full or failing disk does.
var (
	writeLog    = (*os.File).WriteAt
	truncateLog = (*os.File).Truncate
)

// errLogCorrupt marks a log damaged before its last record: acknowledged changes may be lost.
var errLogCorrupt = fmt.Errorf("%w: change log damaged before its end", errCorrupt)

// errLogFormat marks a log this cns cannot read (a newer one wrote it): it is left untouched.
var errLogFormat = errors.New("change log in a format this cns does not read")

// wal is the change log beside the state file. Only the committer uses it after Open.
type wal struct {
	f     *os.File
	salt  uint32
	size  int64 // bytes of the header and the whole records; the file is never trusted beyond it
	end   int64 // the file's length
	dirty bool  // bytes past size (a failed write, a torn record) are still to be cut off
	stale bool  // the header must be written anew (a new file, a failed reset) before a record
	// rotate: a write failed; the log must be checkpointed and reset before the next record.
	rotate bool
}

// openLog opens (creating if needed) the log at path and locks it, so a second cns waits
// rather than reading or trimming a log another one is appending to.
func openLog(path string, timeout time.Duration) (*wal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open change log: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock change log %s: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond) // another process holds it: wait for it as bbolt does
	}
	// The file may be new: its name must survive a power loss before any record relies on it.
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return &wal{f: f}, nil
}

// readBack reads the log and returns the changes of every whole record in order. A torn last
// record is left for the next reset or append to cut off (after Open has accepted the state
// file's schema); damage before the end returns errLogCorrupt, an unknown format errLogFormat.
func (l *wal) readBack(log *slog.Logger) ([]op, error) {
	fi, err := l.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat change log: %w", err)
	}
	l.end = fi.Size()
	data, err := l.read(l.end)
	if err != nil {
		return nil, err
	}
	if len(data) < logHeader || [logHeader]byte(data[:logHeader]) == [logHeader]byte{} {
		// New, or a crash while its first header was written. A reset syncs the header before
		// any record, so records behind a zero header mean the header was damaged.
		if len(data) > logHeader && !allZero(data[logHeader:]) {
			l.dirty = true
			return nil, fmt.Errorf("%w: zero header before %d bytes", errLogCorrupt, len(data)-logHeader)
		}
		l.stale, l.dirty = true, len(data) > 0
		return nil, nil
	}
	if [4]byte(data[:4]) != logMagic {
		return nil, fmt.Errorf("%w: %s starts with %q", errLogFormat, l.f.Name(), data[:4])
	}
	l.salt = binary.LittleEndian.Uint32(data[4:])
	ops, good, err := readLog(data[logHeader:], l.salt)
	if err != nil {
		l.dirty = true // if the state is rebuilt, the reset that follows cuts all of it off
		return nil, err
	}
	l.size = int64(logHeader + good)
	if torn := zeroTail(data[l.size:]); torn > 0 { // zeros are the space reset left
		l.dirty = true
		log.Warn("the change log ends in a torn record (a crash during its write; it was never acknowledged): ignoring it",
			"path", l.f.Name(), "bytes", torn)
	}
	return ops, nil
}

// read returns the first n bytes of the log.
func (l *wal) read(n int64) ([]byte, error) {
	data := make([]byte, n)
	if _, err := l.f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	return data, nil
}

// changes returns the changes of the whole records appended since Open or the last reset.
// A stale log has none: its header is to be written anew, and what follows the old one is
// either applied already or (beside an older state file) not to be applied.
func (l *wal) changes() ([]op, error) {
	if l.stale || l.size <= logHeader {
		return nil, nil
	}
	all, err := l.read(l.size)
	if err != nil {
		return nil, err
	}
	data := all[logHeader:]
	ops, good, err := readLog(data, l.salt)
	if err == nil && good != len(data) {
		err = fmt.Errorf("%w: %d of %d bytes read back whole", errLogCorrupt, good, len(data))
	}
	return ops, err
}

// readLog decodes the whole records at the start of data and returns their changes and where
// they end. Only one record is ever being written, so a crash can damage only the last one:
// a bad spot with no whole record after it is that torn record, whatever it holds (cut short,
// a header that never reached the disk, zeros the filesystem exposed). A whole record after a
// bad spot means acknowledged records were damaged: errLogCorrupt.
func readLog(data []byte, salt uint32) (ops []op, good int, err error) {
	for good < len(data) {
		payload, ok := recordAt(data[good:], salt)
		if !ok {
			if allZero(data[good:]) {
				return ops, good, nil // the space after the last record
			}
			for p := good + 1; p+recordHeader < len(data); p++ {
				if _, ok := recordAt(data[p:], salt); ok {
					return nil, 0, fmt.Errorf("%w: bad record at byte %d of %d, a whole one at %d", errLogCorrupt, good, len(data), p)
				}
			}
			return ops, good, nil
		}
		if ops, err = decodeOps(ops, payload); err != nil {
			return nil, 0, fmt.Errorf("%w: record at byte %d: %w", errLogCorrupt, good, err)
		}
		good += recordHeader + len(payload)
	}
	return ops, good, nil
}

// allZero tells whether b holds only zeros, a block at a time.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// zeroTail returns how many bytes of b come before the zeros it ends with.
func zeroTail(b []byte) int {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[len(b)-n:], zeros[:n]) {
			return len(bytes.TrimRight(b, "\x00"))
		}
		b = b[:len(b)-n]
	}
	return 0
}

// recordAt returns the payload of the record at the start of b if it is whole: its length
// fits and its checksum, salted with this generation's salt, matches.
func recordAt(b []byte, salt uint32) (payload []byte, ok bool) {
	if len(b) < recordHeader {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || uint64(n) > uint64(len(b)-recordHeader) {
		return nil, false
	}
	payload = b[recordHeader : recordHeader+int(n)]
	if checksum(salt, payload) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, false
	}
	return payload, true
}

func checksum(salt uint32, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, binary.LittleEndian.AppendUint32(nil, salt)), castagnoli, payload)
}

// append seals rec (built by newRecord and encodeOps), writes it and returns once it is
// durable. On failure the log is cut back to its last whole record, so a later record never
// follows a partial one.
func (l *wal) append(rec []byte) error {
	if l.stale {
		if err := l.reset(); err != nil {
			return err
		}
	}
	if l.dirty {
		if err := l.trim(); err != nil {
			return fmt.Errorf("trim change log after a failed write: %w", err)
		}
	}
	_, err := writeLog(l.f, l.seal(rec), l.size)
	if err == nil {
		err = unix.Fdatasync(int(l.f.Fd()))
	}
	if err != nil {
		// The failed record may still reach the disk; the next record must not be written in
		// its place under the same salt, where a crash could expose it whole: the committer
		// checkpoints and starts a new generation first (rotate).
		l.rotate = true
		_ = l.trim() // on failure dirty stays set and the next append trims first
		return fmt.Errorf("write change log: %w", err)
	}
	l.size += int64(len(rec))
	l.end = max(l.end, l.size)
	return nil
}

// trim cuts the file to its whole records and makes that durable.
func (l *wal) trim() error {
	l.dirty = true
	if err := truncateLog(l.f, l.size); err != nil {
		return err
	}
	l.end = l.size
	if err := l.f.Sync(); err != nil {
		return err
	}
	l.dirty = false
	return nil
}

// reset empties the log once its changes are durable in the state file, under a new salt,
// and leaves it logSpace bytes long, zeros after the header.
//
// The new header is made durable before any old record is overwritten: from then on every
// old record fails its checksum, however much of the zeroing a crash lets reach the disk. A
// crash before it leaves the old header, and the old records are replayed again. Zeroing in
// place keeps the file's blocks, so no block another file freed is exposed under the new salt
// behind a record either. A log with bytes to cut off (a failed write, a damaged log) or grown
// past logSpace is cut to its header first. A file that cannot be extended to logSpace (a
// full disk) stays shorter and grows record by record, as far as the disk lets it.
func (l *wal) reset() error {
	l.stale = true
	l.salt = rand.Uint32()
	hdr := binary.LittleEndian.AppendUint32(logMagic[:], l.salt)
	if _, err := writeLog(l.f, hdr, 0); err != nil {
		return fmt.Errorf("empty change log: %w", err)
	}
	l.end = max(l.end, logHeader)
	if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
		return fmt.Errorf("empty change log: %w", err)
	}
	used := l.size
	l.size = logHeader
	if l.dirty || l.end > logSpace {
		if err := l.trim(); err != nil {
			return fmt.Errorf("empty change log: %w", err)
		}
		used = logHeader
	}
	for off := int64(logHeader); off < used; off += int64(len(zeros)) {
		if _, err := writeLog(l.f, zeros[:min(int64(len(zeros)), used-off)], off); err != nil {
			// Whatever it left fails the new salt's checksum; cut it off before the next record.
			l.dirty = true
			return fmt.Errorf("empty change log: %w", err)
		}
	}
	for l.end < logSpace { // zeros too: a write cut short leaves space all the same
		n, err := writeLog(l.f, zeros[:min(int64(len(zeros)), logSpace-l.end)], l.end)
		l.end += int64(n)
		if err != nil {
			break
		}
	}
	// The zeros on disk now, with the checkpoint, rather than in the next group's fdatasync.
	if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
		l.dirty = true
		return fmt.Errorf("empty change log: %w", err)
	}
	l.stale, l.rotate = false, false
	return nil
}

// shrink cuts the emptied log to its header, as a cns that stops leaves it.
func (l *wal) shrink() error {
	if l.size != logHeader || l.stale {
		return nil
	}
	return l.trim()
}

func (l *wal) close() error { return l.f.Close() }

// newRecord starts a record in buf (reused): room for its header.
func newRecord(buf []byte) []byte { return append(buf[:0], make([]byte, recordHeader)...) }

// seal fills in the header of a record built by newRecord and encodeOps.
func (l *wal) seal(rec []byte) []byte {
	payload := rec[recordHeader:]
	binary.LittleEndian.PutUint32(rec, uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:], checksum(l.salt, payload))
	return rec
}
