package peer

// peerLRU orders the peer table for eviction: two intrusive lists, peers
// heard (newest first) and peers that went offline or said goodbye (most
// recently ended first). The oldest ended peer goes first, then the least
// recently heard one. Every operation is O(1), so a flood of new node IDs
// costs constant work per datagram however full the table is.
type peerLRU struct {
	heard, off peerList
}

type peerList struct {
	head, tail *peerState // head: most recent
	n          int
}

func (l *peerList) pushFront(ps *peerState) {
	ps.lruPrev, ps.lruNext = nil, l.head
	if l.head != nil {
		l.head.lruPrev = ps
	} else {
		l.tail = ps
	}
	l.head = ps
	l.n++
}

func (l *peerList) unlink(ps *peerState) {
	if ps.lruPrev != nil {
		ps.lruPrev.lruNext = ps.lruNext
	} else {
		l.head = ps.lruNext
	}
	if ps.lruNext != nil {
		ps.lruNext.lruPrev = ps.lruPrev
	} else {
		l.tail = ps.lruPrev
	}
	ps.lruPrev, ps.lruNext = nil, nil
	l.n--
}

func (q *peerLRU) list(ps *peerState) *peerList {
	if ps.lruOff {
		return &q.off
	}
	return &q.heard
}

// push adds a new peer as the most recently heard.
func (q *peerLRU) push(ps *peerState) {
	ps.lruOff = false
	q.heard.pushFront(ps)
}

// touch marks ps heard now.
func (q *peerLRU) touch(ps *peerState) {
	q.list(ps).unlink(ps)
	ps.lruOff = false
	q.heard.pushFront(ps)
}

// setOffline moves ps to the ended peers.
func (q *peerLRU) setOffline(ps *peerState) {
	q.list(ps).unlink(ps)
	ps.lruOff = true
	q.off.pushFront(ps)
}

func (q *peerLRU) remove(ps *peerState) { q.list(ps).unlink(ps) }

// oldest is the peer to evict: the longest-ended, else the least recently
// heard. Nil when empty.
func (q *peerLRU) oldest() *peerState {
	if q.off.tail != nil {
		return q.off.tail
	}
	return q.heard.tail
}

func (q *peerLRU) len() int { return q.heard.n + q.off.n }
