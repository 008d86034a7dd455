// Package cli is diskctl: one file per command, on top of a connection to
// the daemon (the Unix socket, or D-Bus with --bus). Standard streams are
// arguments, so tests run it in-process.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/localsock"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Conn is what diskctl needs from the daemon; the socket client and the
// D-Bus client both provide it, returning the same values.
type Conn interface {
	List(ctx context.Context, f api.ListFilter) ([]disk.Disk, error)
	Where(ctx context.Context, q string) ([]disk.Disk, error)
	History(ctx context.Context, q string) ([]disk.History, error)
	Peers(ctx context.Context) ([]disk.Node, error)
	Localhost(ctx context.Context) (api.Localhost, error)
	Status(ctx context.Context) (api.Status, error)
	Refresh(ctx context.Context) error
	Announce(ctx context.Context) error
	Ping(ctx context.Context) (api.PingResult, error)
	Mount(ctx context.Context, q string, rw bool) (api.MountResult, error)
	Unmount(ctx context.Context, q string, force bool) (api.MountResult, error)
	Watch(ctx context.Context, fn func(api.WatchEvent)) error
	Close() error
}

// env is one invocation's streams, options and lazily opened connection.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	socket         string
	bus            bool
	busAddr        string
	json           bool
	timeout        time.Duration
	conn           Conn
	dialBus        func(ctx context.Context, addr string) (Conn, error)
	// shortLived: this process makes one request and exits, so the
	// socket is dialled with ctlclient.DialShortLived.
	shortLived bool
}

type usageError struct{ error }

// Main runs diskctl with args and returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, dialBus: dialBus}
	defer e.close()
	return e.main(args)
}

// main runs the command line the process was given.
func (e *env) main(args []string) int {
	if code, ok := e.direct(args); ok {
		return code
	}
	return e.exec(args, true)
}

// exec runs one command line; top is false inside the shell.
func (e *env) exec(args []string, top bool) int {
	return e.execTree(e.rootCmd(top, e.invoked(args, top)), args)
}

// execTree runs args on the command tree root and says how it went.
func (e *env) execTree(root *cobra.Command, args []string) int {
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	return e.exitCode(root.Execute())
}

// exitCode reports err, if any, and says how the command went.
func (e *env) exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	// The daemon's errors may quote what peers or media said.
	fmt.Fprintln(e.stderr, "diskctl:", api.Escape(err.Error()))
	var ue usageError
	// cobra reports an unknown subcommand as a plain error.
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return ExitUsage
	}
	return ExitError
}

// command is one of diskctl's commands: its name, and how to build it.
type command struct {
	name  string
	build func() *cobra.Command
}

// commands are diskctl's commands (the shell's, without the shell itself,
// when top is false), each built when needed.
func (e *env) commands(top bool) []command {
	cs := []command{{"list", e.listCmd}, {"where", e.whereCmd}, {"history", e.historyCmd},
		{"status", e.statusCmd}, {"refresh", e.refreshCmd}, {"localhost", e.localhostCmd},
		{"watch", e.watchCmd}, {"peers", e.peersCmd}, {"ping", e.pingCmd}, {"announce", e.announceCmd},
		{"mount", e.mountCmd}, {"unmount", e.unmountCmd}}
	if top {
		cs = append(cs, command{"shell", e.shellCmd})
	}
	return cs
}

// invoked is the command that args name when nothing before it but the
// global flags, in their plain forms, can change what cobra would find:
// then only that command is built (a `where` is a process start, and
// building all of them, cobra's completion commands with their help
// texts included, was a fifth of it). "" means the whole tree: help,
// completion, an unknown command or flag, "--", anything cobra must
// report or resolve itself.
func (e *env) invoked(args []string, top bool) string {
	i := leadingFlags(args, top, func(string, string, bool) {})
	if i < 0 || !slices.ContainsFunc(e.commands(top), func(c command) bool { return c.name == args[i] }) {
		return ""
	}
	return args[i]
}

// leadingFlags walks the global flags that come before the first word of
// args, in their plain forms (--name, --name=value, and --name value for
// those that take one), passing each to set with its value, if it has
// one. It returns the first word's index, or -1 when something else comes
// first: "--", a short flag, a flag it does not know, a missing value.
func leadingFlags(args []string, top bool, set func(name, value string, hasValue bool)) int {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return i
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case !strings.HasPrefix(a, "--") || a == "--":
			return -1
		case name == "json" || top && name == "bus":
			// A bool: a value only after "=".
		case top && (name == "socket" || name == "bus-address" || name == "timeout"):
			if !hasValue {
				if i++; i == len(args) {
					return -1
				}
				value, hasValue = args[i], true
			}
		default:
			return -1
		}
		set(name, value, hasValue)
	}
	return -1
}

// direct runs a `where` or `history` line without cobra, as one request
// on a short-lived connection, when the line can mean nothing else: the
// global flags among --socket, --timeout and a bare --json, then the
// command and its words, none of them a flag. These are what scripts run
// by the thousand, and building the command tree was 0.2 ms of their
// 3 ms here (BenchmarkDiskctlStart). ok is false for any other line, which the
// tree runs; both print and exit alike (TestDirectAnswersAsTheTree).
func (e *env) direct(args []string) (code int, ok bool) {
	socket, timeout, asJSON, plain := e.defaultSocket(), defaultTimeout, false, true
	i := leadingFlags(args, true, func(name, value string, hasValue bool) {
		var err error
		switch name {
		case "json":
			asJSON, plain = true, plain && !hasValue
		case "socket":
			socket = value
		case "timeout":
			timeout, err = time.ParseDuration(value)
			plain = plain && err == nil
		default: // D-Bus
			plain = false
		}
	})
	if !plain || i < 0 || len(args) == i+1 || slices.ContainsFunc(args[i+1:], func(a string) bool { return strings.HasPrefix(a, "-") }) {
		return 0, false
	}
	var run func(context.Context, []string) error
	switch args[i] {
	case "where":
		run = e.where().run
	case "history":
		run = e.history().run
	default:
		return 0, false
	}
	e.socket, e.timeout, e.json, e.shortLived = socket, timeout, asJSON, true
	return e.exitCode(run(context.Background(), args[i+1:])), true
}

// defaultTimeout is --timeout's default.
const defaultTimeout = 30 * time.Second

// rootCmd is the command tree: only the command named only (and cobra's
// help), or all of them when only is "".
func (e *env) rootCmd(top bool, only string) *cobra.Command {
	root := &cobra.Command{
		Use:   "diskctl [command]",
		Short: "Ask diskd where disks are",
		Long: "diskctl asks the local diskd which disk (label, UUID) is attached to which machine on the network.\n" +
			"Without a command it starts an interactive shell (or reads commands from standard input).",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !top {
				return usageError{errors.New("no command")}
			}
			return e.shell(cmd.Context())
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	if top {
		pf.StringVar(&e.socket, "socket", e.defaultSocket(), "daemon socket")
		pf.BoolVar(&e.bus, "bus", false, "talk to diskd over D-Bus instead of the socket")
		pf.StringVar(&e.busAddr, "bus-address", "", "D-Bus address to use with --bus (default: the system bus)")
		pf.DurationVar(&e.timeout, "timeout", defaultTimeout, "give up on the daemon after this long")
	}
	pf.BoolVar(&e.json, "json", false, "print JSON for scripts")
	for _, c := range e.commands(top) {
		if only == "" || only == c.name {
			root.AddCommand(c.build())
		}
	}
	// The completion command is reached by its name only, so a tree
	// built for another command needs none.
	root.CompletionOptions.DisableDefaultCmd = !top || only != ""
	for _, c := range root.Commands() {
		wrapArgs(c)
	}
	return root
}

// wrapArgs makes argument-count errors usage errors (exit 2).
func wrapArgs(c *cobra.Command) {
	if c.Args == nil {
		return
	}
	inner := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := inner(cmd, args); err != nil {
			return usageError{fmt.Errorf("%s: %w", cmd.Name(), err)}
		}
		return nil
	}
}

func (e *env) defaultSocket() string {
	return localsock.ClientPath()
}

// connect opens the connection once per invocation (or shell session).
func (e *env) connect(ctx context.Context) (Conn, error) {
	if e.conn != nil {
		return e.conn, nil
	}
	if e.bus {
		c, err := e.dialBus(ctx, e.busAddr)
		if err != nil {
			return nil, err
		}
		e.conn = c
		return c, nil
	}
	dial := ctlclient.Dial
	if e.shortLived {
		dial = ctlclient.DialShortLived
	}
	c, err := dial(ctx, e.socket)
	if err == nil {
		e.conn = c
		return c, nil
	}
	if errors.Is(err, localsock.ErrNoDaemon) {
		if bc, berr := e.dialBus(ctx, e.busAddr); berr == nil {
			fmt.Fprintf(e.stderr, "diskctl: socket %s unreachable; using D-Bus\n", api.Escape(e.socket))
			e.conn = bc
			return bc, nil
		}
		return nil, fmt.Errorf("cannot reach diskd at %s: is it running? (start it with `systemctl start diskd` or `diskd`)", e.socket)
	}
	return nil, err
}

func (e *env) close() {
	if e.conn != nil {
		e.conn.Close()
		e.conn = nil
	}
}

func (e *env) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	if e.timeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, e.timeout)
}

// call runs fn under parent with a connection and a deadline.
func (e *env) call(parent context.Context, fn func(ctx context.Context, c Conn) error) error {
	ctx, cancel := e.ctx(parent)
	defer cancel()
	c, err := e.connect(ctx)
	if err != nil {
		return err
	}
	if err := fn(ctx, c); err != nil {
		// A broken session is not reused by the shell.
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "reading reply") {
			e.close()
		}
		return err
	}
	return nil
}

// printJSON prints v as one line of JSON.
func (e *env) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(append(b, '\n'))
	return err
}

// printDisks prints a disk list exactly as the daemon's socket encodes it,
// so --json output is the same whichever way diskctl reached the daemon.
func (e *env) printDisks(ds []disk.Disk) error {
	for i := range ds {
		if ds[i].Mounts == nil {
			ds[i].Mounts = []string{}
		}
	}
	_, err := e.stdout.Write(append(disk.AppendJSONArray(nil, ds), '\n'))
	return err
}
