// Command diskctl asks the local diskd where disks are. It is a thin
// client: all of it lives in package cli, which links no daemon code.
package main

import (
	"os"

	"github.com/diskd/diskd/cmd/diskctl/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
