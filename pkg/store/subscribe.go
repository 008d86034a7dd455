package store

import (
	"sync"

	"github.com/diskd/diskd/pkg/disk"
)

// Subscription delivers the store's change events in order. When the
// subscriber falls more than its buffer behind, the store closes C and Err
// returns ErrOverflow: the subscriber re-reads the table and subscribes
// again. The store never waits for a subscriber.
type Subscription struct {
	C <-chan disk.Event

	c     chan disk.Event
	s     *Store
	once  sync.Once
	errMu sync.Mutex
	err   error
}

// Version grows with every change event, so a poller can tell "nothing
// changed" without reading the table.
func (s *Store) Version() uint64 { return s.version.Load() }

// Subscribe returns a subscription with room for buf pending events.
func (s *Store) Subscribe(buf int) *Subscription {
	if buf < 1 {
		buf = 1
	}
	sub := &Subscription{c: make(chan disk.Event, buf), s: s}
	sub.C = sub.c
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	return sub
}

// Close ends the subscription; C is closed. Safe to call more than once.
func (sub *Subscription) Close() {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	sub.closeLocked(nil)
}

// Err says why C was closed: nil after Close, ErrOverflow when the
// subscriber fell behind.
func (sub *Subscription) Err() error {
	sub.errMu.Lock()
	defer sub.errMu.Unlock()
	return sub.err
}

// closeLocked runs with s.mu held, so publish never sends on a closed channel.
func (sub *Subscription) closeLocked(err error) {
	sub.once.Do(func() {
		sub.errMu.Lock()
		sub.err = err
		sub.errMu.Unlock()
		delete(sub.s.subs, sub)
		close(sub.c)
	})
}

// publish runs with s.mu held for writing.
func (s *Store) publish(ev disk.Event) {
	s.version.Add(1)
	if len(s.subs) == 0 {
		return
	}
	ev.Time = s.now()
	for sub := range s.subs {
		select {
		case sub.c <- ev:
		default:
			s.stats.DroppedSubs++
			sub.closeLocked(ErrOverflow)
		}
	}
}
