// Command vnet-image builds the vnet-cni node image (cns, vnet-cni, install-cni and the
// conflist, FROM scratch) as a tarball, without Docker. Its last line of output is the
// tarball's path and the image reference.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vnet-cni/vnet-cni/test/image"
)

func main() {
	bin := flag.String("bin", "bin", "directory of the static binaries")
	conflist := flag.String("conflist", "cmd/vnet-cni/10-vnet.conflist", "conflist to ship")
	ref := flag.String("ref", "localhost/vnet-cni:dev", "image reference")
	out := flag.String("out", "bin/vnet-cni-image.tar", "tarball to write")
	flag.Parse()
	digest, err := image.Build(*ref, image.NodeFiles(*bin, *conflist), []string{"/cns"}, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vnet-image:", err)
		os.Exit(1)
	}
	abs, _ := filepath.Abs(*out)
	fmt.Printf("image %s (%s)\n%s %s\n", *ref, digest, abs, *ref)
}
