package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

const (
	logSpace = 2 << 20 // as cns's change log: the file keeps this length, zeros when new
	maxGroup = 512     // as cns's committer
)

// durableLog is the least any server does to make a call durable before answering it: cns's
// group commit without its records' framing, checksums, checkpoints or crash rules. The calls
// queued while a group is written form the next group; each group is one write over blocks
// the file already has (it wraps to the start when its space is used) and one fdatasync.
type durableLog struct {
	f    *os.File
	reqs chan call
}

type call struct {
	b    []byte
	done chan error
}

func openDurableLog(path string) (*durableLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(make([]byte, logSpace)); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the log's space: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	l := &durableLog{f: f, reqs: make(chan call, maxGroup)}
	go l.run()
	return l, nil
}

func (l *durableLog) commit(b []byte) error {
	c := call{b: b, done: make(chan error, 1)}
	l.reqs <- c
	return <-c.done
}

func (l *durableLog) run() {
	var off int64
	var buf []byte
	for first := range l.reqs {
		group := []call{first}
	drain:
		for len(group) < maxGroup {
			select {
			case c := <-l.reqs:
				group = append(group, c)
			default:
				break drain
			}
		}
		buf = buf[:0]
		for _, c := range group {
			buf = append(buf, c.b...)
		}
		if off+int64(len(buf)) > logSpace {
			off = 0
		}
		_, err := l.f.WriteAt(buf, off)
		if err == nil {
			err = unix.Fdatasync(int(l.f.Fd()))
		}
		off += int64(len(buf))
		for _, c := range group {
			c.done <- err
		}
	}
}
