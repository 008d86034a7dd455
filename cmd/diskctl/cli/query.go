package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"
)

// queryCmd builds a command that fetches one value from the daemon and
// prints it as JSON (--json) or for a person.
func queryCmd[T any](e *env, use, short string, fetch func(context.Context, Conn) (T, error), human func(io.Writer, T)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd.Context(), func(ctx context.Context, c Conn) error {
				v, err := fetch(ctx, c)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(v)
				}
				human(e.stdout, v)
				return nil
			})
		},
	}
}

// done is the result of commands that act and return nothing.
type done struct{}

// actionCmd builds a command that asks the daemon to act and says what
// it did.
func actionCmd(e *env, use, short, said string, act func(context.Context, Conn) error) *cobra.Command {
	return queryCmd(e, use, short,
		func(ctx context.Context, c Conn) (done, error) { return done{}, act(ctx, c) },
		func(w io.Writer, _ done) { io.WriteString(w, said+"\n") })
}
