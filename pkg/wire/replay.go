package wire

// WindowSize is how many sequence numbers behind the newest a ReplayWindow
// still accepts. It is generous because the same datagram arrives once per
// address family and a 1000-disk announce is ~100 datagrams in a burst.
const WindowSize = 256

// ReplayWindow remembers the sequence numbers of one (node, instance) seen
// lately, as a bitmap ring behind the highest one. The zero value is an
// empty window.
type ReplayWindow struct {
	top  uint64
	bits [WindowSize / 64]uint64
	used bool
}

func (w *ReplayWindow) bit(s uint64) (int, uint64) {
	i := s % WindowSize
	return int(i / 64), 1 << (i % 64)
}

// Accept records seq and returns ReasonNone if it is new, ReasonDuplicate
// if it was seen, ReasonTooOld if it is too far behind to tell.
func (w *ReplayWindow) Accept(seq uint64) Reason {
	switch {
	case !w.used:
		*w = ReplayWindow{top: seq, used: true}
	case seq > w.top:
		if seq-w.top >= WindowSize {
			w.bits = [WindowSize / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				i, m := w.bit(s)
				w.bits[i] &^= m
			}
		}
		w.top = seq
	case w.top-seq >= WindowSize:
		return ReasonTooOld
	default:
		if i, m := w.bit(seq); w.bits[i]&m != 0 {
			return ReasonDuplicate
		}
	}
	i, m := w.bit(seq)
	w.bits[i] |= m
	return ReasonNone
}
