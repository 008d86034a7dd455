package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) pingCmd() *cobra.Command {
	return queryCmd(e, "ping", "Ask every peer to answer; count the answers within a second",
		func(ctx context.Context, c Conn) (api.PingResult, error) { return c.Ping(ctx) },
		func(w io.Writer, p api.PingResult) { fmt.Fprintf(w, "%d peers answered within a second\n", p.Answered) })
}
