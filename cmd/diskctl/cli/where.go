package cli

import (
	"context"
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) whereCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "where LABEL|UUID",
		Short: "Say which machine has a disk, or where it was last seen",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := strings.Join(args, " ") // labels may hold spaces
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				ds, err := c.Where(ctx, q)
				if err != nil {
					return err
				}
				if e.json {
					if err := e.printDisks(ds); err != nil {
						return err
					}
				} else {
					api.WriteWhere(e.stdout, q, ds)
				}
				if len(ds) == 0 {
					return errNotFound
				}
				return nil
			})
		},
	}
}

// errNotFound makes `diskctl where` exit 1 for scripts; the output already
// said so.
var errNotFound = errors.New("not found")
