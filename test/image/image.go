// Package image builds the vnet-cni node image without Docker: the static binaries and the
// conflist in one layer on an empty base (FROM scratch), written as a tarball that
// `ctr images import` and `docker load` accept (go-containerregistry's tarball format: a
// manifest.json, the config and the layer blobs).
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one file of the image: Src on this machine, Dst its absolute path in the image.
type File struct {
	Src, Dst string
	Mode     int64
}

// Build writes an image holding files, with entrypoint, to out under ref, and returns the
// image's digest. Timestamps are fixed, so the same inputs give the same digest.
func Build(ref string, files []File, entrypoint []string, out string) (v1.Hash, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	layerTar, err := tarOf(files)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return v1.Hash{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = []string{"PATH=/"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "vnet-cni"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return v1.Hash{}, err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// epoch is every file's modification time: reproducible layers.
var epoch = time.Unix(0, 0).UTC()

func tarOf(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		b, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("image file: %w", err)
		}
		hdr := &tar.Header{Name: f.Dst[1:], Mode: f.Mode, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// NodeFiles are the node image's files: cns, vnet-cni and install-cni from bin, and the
// conflist install-cni installs.
func NodeFiles(bin, conflist string) []File {
	files := []File{{Src: conflist, Dst: "/10-vnet.conflist", Mode: 0o644}}
	for _, b := range []string{"cns", "vnet-cni", "install-cni"} {
		files = append(files, File{Src: filepath.Join(bin, b), Dst: "/" + b, Mode: 0o755})
	}
	return files
}
