//go:build diskd_debughooks

package peer

import "context"

// DebugWedge blocks the protocol loop until ctx ends, as a deadlock would.
// Only in binaries built with -tags diskd_debughooks, for the watchdog's
// end-to-end test.
func (s *Service) DebugWedge(ctx context.Context) error {
	return s.queue(ctx, func(*driver) { <-ctx.Done() })
}
