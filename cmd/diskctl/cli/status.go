package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) statusCmd() *cobra.Command {
	return queryCmd(e, "status", "Show the daemon's version, uptime, last scan, network and problems",
		func(ctx context.Context, c Conn) (api.Status, error) { return c.Status(ctx) }, api.WriteStatus)
}
