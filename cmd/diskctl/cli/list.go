package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) listCmd() *cobra.Command {
	var host string
	c := &cobra.Command{
		Use:   "list",
		Short: "List every disk known on the network, present or remembered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				// The socket's reply is already the output: pass it on.
				if lj, ok := c.(interface {
					ListJSON(context.Context, string) ([]byte, error)
				}); ok && e.json {
					raw, err := lj.ListJSON(ctx, host)
					if err != nil {
						return err
					}
					_, err = e.stdout.Write(append(raw, '\n'))
					return err
				}
				ds, err := c.List(ctx, host)
				if err != nil {
					return err
				}
				if e.json {
					return e.printDisks(ds)
				}
				api.WriteDisks(e.stdout, ds)
				return nil
			})
		},
	}
	c.Flags().StringVar(&host, "host", "", "only disks of this host (node name or ID)")
	return c
}
