package cli

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
)

func (e *env) whereCmd() *cobra.Command { return e.where().cmd() }

func (e *env) where() lookup[disk.Disk] {
	return lookup[disk.Disk]{e, "where LABEL|UUID", "Say which machine has a disk, or where it was last seen",
		func(ctx context.Context, c Conn, q string) ([]disk.Disk, error) { return c.Where(ctx, q) },
		e.printDisks, api.WriteWhere}
}

// lookup is a command that looks disks up by LABEL|UUID (the words
// joined: labels may hold spaces), prints the answer as JSON or for a
// person, and exits 1 when nothing matches.
type lookup[T any] struct {
	e          *env
	use, short string
	fetch      func(context.Context, Conn, string) ([]T, error)
	asJSON     func([]T) error
	human      func(io.Writer, string, []T)
}

func (l lookup[T]) cmd() *cobra.Command {
	return &cobra.Command{
		Use:   l.use,
		Short: l.short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return l.run(cmd.Context(), args)
		},
	}
}

// run looks up the words in args.
func (l lookup[T]) run(ctx context.Context, args []string) error {
	q := strings.Join(args, " ")
	return l.e.call(ctx, func(ctx context.Context, c Conn) error {
		vs, err := l.fetch(ctx, c, q)
		if err != nil {
			return err
		}
		if l.e.json {
			if err := l.asJSON(vs); err != nil {
				return err
			}
		} else {
			l.human(l.e.stdout, q, vs)
		}
		if len(vs) == 0 {
			return errNotFound
		}
		return nil
	})
}

// errNotFound makes `diskctl where` and `history` exit 1 for scripts; the
// output already said so.
var errNotFound = errors.New("not found")
