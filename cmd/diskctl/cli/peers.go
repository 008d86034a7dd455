package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
)

func (e *env) peersCmd() *cobra.Command {
	return queryCmd(e, "peers", "List the machines running diskd, online or not",
		func(ctx context.Context, c Conn) ([]disk.Node, error) { return c.Peers(ctx) }, api.WriteNodes)
}
