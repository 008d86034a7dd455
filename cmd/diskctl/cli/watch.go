package cli

import (
	"encoding/json"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) watchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Print changes as they happen, until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			c, err := e.connect(ctx)
			if err != nil {
				return err
			}
			// A watch uses up its session; the shell reconnects after it.
			defer e.close()
			enc := json.NewEncoder(e.stdout)
			return c.Watch(ctx, func(ev api.WatchEvent) {
				if e.json {
					enc.Encode(ev)
				} else {
					api.WriteEvent(e.stdout, ev)
				}
			})
		},
	}
}
