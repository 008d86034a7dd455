package cli

import (
	"context"

	"github.com/spf13/cobra"
)

func (e *env) refreshCmd() *cobra.Command {
	return actionCmd(e, "refresh", "Rescan this machine's disks now", "refreshed",
		func(ctx context.Context, c Conn) error { return c.Refresh(ctx) })
}
