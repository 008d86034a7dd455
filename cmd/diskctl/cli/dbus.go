package cli

import (
	"context"

	"github.com/diskd/diskd/pkg/dbusclient"
)

// dialBus connects to diskd over D-Bus: the system bus, or addr when set.
func dialBus(ctx context.Context, addr string) (Conn, error) {
	bus := "system"
	if addr != "" {
		bus = addr
	}
	return dbusclient.Dial(ctx, bus)
}
