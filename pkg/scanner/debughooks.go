//go:build diskd_debughooks

package scanner

import "context"

// DebugWedge blocks the event loop until ctx ends, as a deadlock would.
// Only in binaries built with -tags diskd_debughooks, for the watchdog's
// end-to-end test.
func (s *Scanner) DebugWedge(ctx context.Context) error {
	return s.onLoop(ctx, func() { <-ctx.Done() })
}
