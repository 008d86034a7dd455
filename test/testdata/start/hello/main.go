// Command hello is the floor under diskctl's start in
// BenchmarkDiskctlStart: a Go program that prints one line.
package main

import "os"

func main() { os.Stdout.WriteString("hello\n") }
