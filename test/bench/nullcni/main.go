// Command nullcni is a CNI plugin that does nothing: it reads its configuration and answers
// ADD with an empty result. make bench runs it through cnitool beside ours and the reference:
// what it costs is the floor of any Go plugin, exec'd by the runtime for every pod.
package main

import (
	"io"
	"os"
)

func main() {
	_, _ = io.Copy(io.Discard, os.Stdin)
	if os.Getenv("CNI_COMMAND") == "ADD" {
		_, _ = os.Stdout.WriteString(`{"cniVersion":"1.0.0"}`)
	}
}
