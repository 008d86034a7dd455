// Command hellodeps is hello linking what diskctl links beyond the
// standard library (cobra, godbus, readline): what their package
// initialisation and size cost a process start, before diskctl's own work.
package main

import (
	"os"

	_ "github.com/chzyer/readline"
	_ "github.com/godbus/dbus/v5"
	_ "github.com/godbus/dbus/v5/introspect"
	_ "github.com/spf13/cobra"
)

func main() { os.Stdout.WriteString("hello\n") }
