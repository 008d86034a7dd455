package logging

import (
	"sync"
	"time"
)

// Limiter lets one log line of each kind through per interval and counts
// the ones it held back, for lines that someone else can trigger (a local
// user's refused request, a client that stops reading). Kinds are fixed
// strings chosen by the code, never keys an outsider picks, so the set
// stays small.
type Limiter struct {
	// Every is the interval; 0 means 10 s.
	Every time.Duration

	mu   sync.Mutex
	last map[string]*limitState
}

type limitState struct {
	at   time.Time
	held int
}

// Allow reports whether a line of kind may be logged at now, and how many
// lines of that kind were held back since the last one let through.
func (l *Limiter) Allow(kind string, now time.Time) (ok bool, held int) {
	every := l.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]*limitState)
	}
	s := l.last[kind]
	if s == nil {
		s = &limitState{}
		l.last[kind] = s
	} else if now.Sub(s.at) < every {
		s.held++
		return false, 0
	}
	held, s.held, s.at = s.held, 0, now
	return true, held
}
