package cli

import (
	"bufio"
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) listCmd() *cobra.Command {
	var f api.ListFilter
	c := &cobra.Command{
		Use:   "list",
		Short: "List every disk known on the network, present or remembered",
		Long: "List every disk known on the network, present or remembered.\n" +
			"--host, --present and --label narrow the list on the daemon's side.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.CheckLabelGlob(f.Label); err != nil {
				return usageError{err}
			}
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				// The socket's reply is already the output: pass it on
				// as it comes.
				if lj, ok := c.(interface {
					ListJSONTo(context.Context, api.ListFilter, io.Writer) error
				}); ok && e.json {
					w := bufio.NewWriterSize(e.stdout, 64<<10)
					if err := lj.ListJSONTo(ctx, f, w); err != nil {
						return err
					}
					w.WriteByte('\n')
					return w.Flush()
				}
				ds, err := c.List(ctx, f)
				if err != nil {
					return err
				}
				if e.json {
					return e.printDisks(ds)
				}
				w := bufio.NewWriterSize(e.stdout, 64<<10)
				api.WriteDisks(w, ds)
				return w.Flush()
			})
		},
	}
	c.Flags().StringVar(&f.Host, "host", "", "only disks of this host (node name or ID)")
	c.Flags().BoolVar(&f.Present, "present", false, "only disks attached now")
	c.Flags().StringVar(&f.Label, "label", "", "only disks whose label matches this glob (*, ?, [a-z]; a disk without a label never matches)")
	return c
}
