//go:build !diskd_debughooks

package main

import (
	"context"
	"log/slog"

	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/scanner"
)

// startDebugHooks does nothing in a normal build; see debughooks.go.
func startDebugHooks(context.Context, *slog.Logger, *scanner.Scanner, *peer.Service) {}
