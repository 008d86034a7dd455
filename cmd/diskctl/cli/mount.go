package cli

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) mountCmd() *cobra.Command {
	var rw bool
	c := &cobra.Command{
		Use:   "mount LABEL|UUID",
		Short: "Have the machine that has a disk mount it (read-only unless --rw)",
		Long: "mount asks the machine the disk is attached to, this one or a peer, to mount it under its mount\n" +
			"directory (/media/diskd by default). That machine's --mount-allow rules decide; asking is for root\n" +
			"and the admin group, and a peer's disk needs a keyed network (--key-file on both machines).",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := strings.Join(args, " ") // labels may hold spaces
			return e.call(cmd.Context(), func(ctx context.Context, c Conn) error {
				r, err := c.Mount(ctx, q, rw)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(r)
				}
				api.WriteMounted(e.stdout, r)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&rw, "rw", false, "mount read-write (the owner needs a --mount-allow-rw rule for it)")
	return c
}

func (e *env) unmountCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "unmount LABEL|UUID",
		Short: "Have the machine that has a disk unmount what diskd mounted",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := strings.Join(args, " ")
			return e.call(cmd.Context(), func(ctx context.Context, c Conn) error {
				r, err := c.Unmount(ctx, q, force)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(r)
				}
				api.WriteUnmounted(e.stdout, r)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&force, "force", false, "also a mount diskd did not make (root, on the disk's own machine)")
	return c
}
