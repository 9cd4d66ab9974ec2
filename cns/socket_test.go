package cns

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The mutating socket must never exist at its path with a mode others could use, not even
// between bind and chmod. Under umask 0 bind creates the socket 0777; the inotify watch on
// the socket's directory then sees how the socket arrived: it must appear by a rename,
// already 0600, never be created there and have its mode changed afterwards.
func TestMutatingSocketIsNeverReachableByOthers(t *testing.T) {
	dir, err := os.MkdirTemp("", "cns-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil { // an existing, too open directory
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cns.sock")

	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_ATTRIB|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}

	old := syscall.Umask(0) // the worst umask a caller can start cns with
	l, err := listenUnix(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm()&0o027 != 0 {
		t.Errorf("socket directory left %v", di.Mode().Perm())
	}
	var arrived bool
	buf := make([]byte, 64<<10)
	n, _ := unix.Read(fd, buf) // the events are queued by now; nonblocking read takes them
	for off := 0; off+unix.SizeofInotifyEvent <= max(n, 0); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
		off += unix.SizeofInotifyEvent + int(ev.Len)
		if name != "cns.sock" {
			continue
		}
		switch {
		case ev.Mask&unix.IN_MOVED_TO != 0:
			arrived = true
		case ev.Mask&unix.IN_CREATE != 0:
			t.Error("the socket was created at its final path, with the umask's mode, before being restricted")
		case ev.Mask&unix.IN_ATTRIB != 0:
			t.Error("the socket's mode was changed at its final path: it was reachable before that")
		}
	}
	if !arrived && !t.Failed() {
		t.Fatal("no inotify event for the socket: the watch saw nothing")
	}
}

func TestStaleSocketIsReplacedAndOtherFilesAreNot(t *testing.T) {
	dir, err := os.MkdirTemp("", "cns-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "cns.sock")
	l, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // stale: the socket file stays
	if l, err = listenUnix(path); err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l.Close()
	for _, e := range entries(dir) {
		if e != "cns.sock" {
			t.Fatalf("directory holds %q besides the socket: a staging directory was left", e)
		}
	}
	os.Remove(path)
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := listenUnix(path); err == nil {
		t.Fatal("listened over a regular file")
	}
}

func entries(dir string) (names []string) {
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
