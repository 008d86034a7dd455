package cli

import (
	"bufio"
	"context"
	"io"
	"os"

	"golang.org/x/sys/unix"

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
			return e.call(cmd.Context(), func(ctx context.Context, c Conn) error {
				// The socket's reply is already the output: pass it on
				// as it comes, unbuffered (ListJSONTo writes large
				// stretches).
				if lj, ok := c.(interface {
					ListJSONTo(context.Context, api.ListFilter, io.Writer) error
				}); ok && e.json {
					growPipe(e.stdout, listWriteSize)
					if err := lj.ListJSONTo(ctx, f, e.stdout); err != nil {
						return err
					}
					_, err := e.stdout.Write([]byte{'\n'})
					return err
				}
				ds, err := c.List(ctx, f)
				if err != nil {
					return err
				}
				if e.json {
					return e.printDisks(ds)
				}
				w := bufio.NewWriterSize(e.stdout, listWriteSize)
				growPipe(e.stdout, listWriteSize)
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

// listWriteSize is how much of a list diskctl writes at once. A list of
// 100,000 disks is 40 MB: through a pipe of the default 64 KiB, writer
// and reader would take turns 600 times, each waking the other.
const listWriteSize = 1 << 20

// growPipe asks the kernel for a pipe buffer of n bytes when w is a pipe,
// so one write of a list moves n bytes to the reader (jq, a script).
// Best effort: the limit is /proc/sys/fs/pipe-max-size (1 MiB by
// default) for users other than root, and a refusal changes nothing.
func growPipe(w io.Writer, n int) {
	f, ok := w.(*os.File)
	if !ok {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if unix.Fstat(int(fd), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return
		}
		if cur, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0); err == nil && cur < n {
			unix.FcntlInt(fd, unix.F_SETPIPE_SZ, n)
		}
	})
}
