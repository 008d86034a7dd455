package cli

import (
	"context"

	"github.com/spf13/cobra"
)

func (e *env) announceCmd() *cobra.Command {
	return actionCmd(e, "announce", "Send this machine's inventory to the peers now", "announced",
		func(ctx context.Context, c Conn) error { return c.Announce(ctx) })
}
