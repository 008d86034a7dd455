package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chzyer/readline"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// HistoryFile is the shell's history, in the user's home directory.
const HistoryFile = ".diskd_history"

func (e *env) shellCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "shell",
		Short: "Interactive shell (the default when no command is given)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return e.shell(cmd.Context()) },
	}
}

// shell runs commands typed at a prompt with line editing and history, or,
// when stdin is not a terminal, one command per input line. ^D ends it.
func (e *env) shell(ctx context.Context) error {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return e.interactive()
	}
	failed := 0
	sc := bufio.NewScanner(e.stdin)
	for sc.Scan() {
		if code, quit := e.shellLine(sc.Text()); quit {
			break
		} else if code != ExitOK {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d commands failed", failed)
	}
	return sc.Err()
}

// interactive is the shell. github.com/chzyer/readline has had no release
// since 2022; its maintained fork, github.com/ergochat/readline, keeps the
// same API (a change of import path) but is not served by the module proxy
// this project builds from, so chzyer's v1.5.1 stays until it is
// (test/shell_test.go drives the shell through a real pty either way).
func (e *env) interactive() error {
	hist := ""
	if home, err := os.UserHomeDir(); err == nil {
		hist = filepath.Join(home, HistoryFile)
	}
	var names []readline.PrefixCompleterInterface
	for _, c := range e.rootCmd(false, "").Commands() {
		names = append(names, readline.PcItem(c.Name()))
	}
	names = append(names, readline.PcItem("quit"))
	rl, err := readline.NewEx(&readline.Config{
		Prompt:          "diskd> ",
		HistoryFile:     hist,
		AutoComplete:    readline.NewPrefixCompleter(names...),
		InterruptPrompt: "^C",
		EOFPrompt:       "",
		Stdout:          e.stdout,
		Stderr:          e.stderr,
	})
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	defer rl.Close()
	fmt.Fprintln(e.stdout, `diskctl shell: "help" lists commands, ^D exits`)
	for {
		line, err := rl.Readline()
		if errors.Is(err, readline.ErrInterrupt) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, quit := e.shellLine(line); quit {
			return nil
		}
	}
}

// shellLine runs one shell line through the same command tree.
func (e *env) shellLine(line string) (code int, quit bool) {
	args := strings.Fields(line)
	if len(args) == 0 || strings.HasPrefix(args[0], "#") {
		return ExitOK, false
	}
	switch args[0] {
	case "quit", "exit":
		return ExitOK, true
	case "help", "?":
		args = append([]string{"--help"}, args[1:]...)
	}
	return e.exec(args, false), false
}
