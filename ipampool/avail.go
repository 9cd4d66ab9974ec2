package ipampool

// slot is the pool's copy of an entry, with its place in the Available heap.
type slot struct {
	Entry
	at int // index in Pool.avail; -1 when not Available
}

// availHeap holds the Available entries as a binary min-heap in assignment order: the one
// idle the longest first, ties broken by the lowest address. Assign takes its root instead
// of scanning every entry under the manager's lock.
type availHeap []*slot

// before is the assignment order; addresses are unique, so it is total.
func before(a, b *slot) bool {
	return a.Since.Before(b.Since) || (a.Since.Equal(b.Since) && a.Addr.Less(b.Addr))
}

func (h availHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].at, h[j].at = i, j
}

func (h availHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !before(h[i], h[parent]) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down sifts h[i] towards the leaves and reports whether it moved.
func (h availHeap) down(i int) bool {
	start := i
	for {
		least := i
		for _, c := range [2]int{2*i + 1, 2*i + 2} {
			if c < len(h) && before(h[c], h[least]) {
				least = c
			}
		}
		if least == i {
			return i != start
		}
		h.swap(i, least)
		i = least
	}
}

func (h *availHeap) push(e *slot) {
	e.at = len(*h)
	*h = append(*h, e)
	h.up(e.at)
}

func (h *availHeap) remove(e *slot) {
	i, last := e.at, len(*h)-1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	e.at = -1
	if i != last {
		h.fixAt(i)
	}
}

// fix restores the order after e's Since changed.
func (h availHeap) fix(e *slot) { h.fixAt(e.at) }

func (h availHeap) fixAt(i int) {
	if !h.down(i) {
		h.up(i)
	}
}
