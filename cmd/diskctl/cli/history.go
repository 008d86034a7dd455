package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
)

func (e *env) historyCmd() *cobra.Command { return e.history().cmd() }

func (e *env) history() lookup[disk.History] {
	return lookup[disk.History]{e, "history LABEL|UUID", "Say where and when a disk was seen, newest first",
		func(ctx context.Context, c Conn, q string) ([]disk.History, error) { return c.History(ctx, q) },
		func(hs []disk.History) error { return e.printJSON(hs) }, api.WriteHistory}
}
