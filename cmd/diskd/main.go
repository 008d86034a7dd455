// Command diskd is the disk-finding daemon: it keeps this machine's block
// devices in a network-wide table shared with its peers, and answers
// diskctl on a Unix socket and desktop code on D-Bus. main only parses the
// configuration and wires components; see run.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "0.1.0-dev"

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	if len(args) > 0 && args[0] == "keygen" {
		return keygen(args[1:], os.Stdout, os.Stderr)
	}
	cfg, err := parseArgs(args)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "diskd:", err)
		return 2
	}
	if cfg.printVersion {
		fmt.Println("diskd", version)
		return 0
	}
	if cfg.printConfig {
		if err := writeConfig(os.Stdout, cfg.Config); err != nil {
			fmt.Fprintln(os.Stderr, "diskd:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg.Config); err != nil {
		fmt.Fprintln(os.Stderr, "diskd:", err)
		return 1
	}
	return 0
}

type cliConfig struct {
	Config
	printConfig  bool
	printVersion bool
}

// parseArgs applies defaults, then the config file, then flags.
func parseArgs(args []string) (c cliConfig, err error) {
	var path string
	// First pass: find --config only.
	pre := pflag.NewFlagSet("diskd", pflag.ContinueOnError)
	pre.ParseErrorsAllowlist.UnknownFlags = true
	pre.SetOutput(discard{})
	pre.Usage = func() {}
	pre.StringVar(&path, "config", DefaultConfigFile, "")
	pre.BoolP("help", "h", false, "")
	_ = pre.Parse(args)
	explicit := pre.Changed("config")

	c.Config = defaultConfig()
	if err := loadConfigFile(&c.Config, path, explicit); err != nil {
		return c, err
	}
	fs := pflag.NewFlagSet("diskd", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: diskd [flags]\n       diskd keygen [--force] [--id N] PATH\n\nKeeps this machine's disks in a table shared with its peers; see diskd(8).\n\nFlags:\n%s", fs.FlagUsages())
	}
	fs.String("config", DefaultConfigFile, "config file (TOML); flags override it")
	addFlags(fs, &c.Config)
	fs.BoolVar(&c.printConfig, "print-config", false, "print the effective configuration and exit")
	fs.BoolVar(&c.printVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (diskd takes only flags)", fs.Arg(0))
	}
	return c, c.Config.validate()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
