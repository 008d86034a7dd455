package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
)

func (e *env) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's version, uptime, last scan, network and problems",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				s, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(s)
				}
				api.WriteStatus(e.stdout, s)
				return nil
			})
		},
	}
}

func (e *env) localhostCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "localhost",
		Short: "Show this machine's node name, ID and addresses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				l, err := c.Localhost(ctx)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(l)
				}
				api.WriteLocalhost(e.stdout, l)
				return nil
			})
		},
	}
}

func (e *env) peersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "List the machines running diskd, online or not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				ns, err := c.Peers(ctx)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(ns)
				}
				api.WriteNodes(e.stdout, ns)
				return nil
			})
		},
	}
}

func (e *env) refreshCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "refresh",
		Short: "Rescan this machine's disks now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				if err := c.Refresh(ctx); err != nil {
					return err
				}
				if e.json {
					return e.printJSON(struct{}{})
				}
				fmt.Fprintln(e.stdout, "refreshed")
				return nil
			})
		},
	}
}

func (e *env) announceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "announce",
		Short: "Send this machine's inventory to the peers now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				if err := c.Announce(ctx); err != nil {
					return err
				}
				if e.json {
					return e.printJSON(struct{}{})
				}
				fmt.Fprintln(e.stdout, "announced")
				return nil
			})
		},
	}
}

func (e *env) pingCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ping",
		Short: "Ask every peer to answer; count the answers within a second",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.call(cmd, func(ctx context.Context, c Conn) error {
				p, err := c.Ping(ctx)
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(p)
				}
				fmt.Fprintf(e.stdout, "%d peers answered within a second\n", p.Answered)
				return nil
			})
		},
	}
}
