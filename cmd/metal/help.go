package main

import (
	"embed"
	"strings"
)

// help holds the verbs' long help and examples, one text file each, so a
// verb's Go file keeps its wiring and its help reads as the page it is.
//
//go:embed help
var help embed.FS

// helpText is help/NAME.txt: NAME is the verb's path below metal with
// dashes ("images-fetch"), and ".examples" for its examples. A missing
// file is a bug that every test run finds (the commands are built).
func helpText(name string) string {
	b, err := help.ReadFile("help/" + name + ".txt")
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}
