package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) localhostCmd() *cobra.Command {
	return queryCmd(e, "localhost", "Show this machine's node name, ID and addresses",
		func(ctx context.Context, c Conn) (api.Localhost, error) { return c.Localhost(ctx) }, api.WriteLocalhost)
}
