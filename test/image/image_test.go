package image

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The tarball has the layout `ctr images import` reads (manifest.json naming the config, the
// tag and the layers), the files with their modes, the entrypoint, and a reproducible digest.
func TestImageTarballIsImportableAndReproducible(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "cns")
	os.WriteFile(src, []byte("\x7fELF fake static binary"), 0o755)
	conf := filepath.Join(dir, "c.conflist")
	os.WriteFile(conf, []byte(`{}`), 0o644)
	files := []File{{Src: src, Dst: "/cns", Mode: 0o755}, {Src: conf, Dst: "/10-vnet.conflist", Mode: 0o644}}
	const ref = "localhost/vnet-cni:test"
	out := filepath.Join(dir, "img.tar")
	d1, err := Build(ref, files, []string{"/cns"}, out)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Build(ref, files, []string{"/cns"}, filepath.Join(dir, "again.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("same inputs, digests %s and %s: not reproducible", d1, d2)
	}

	// The docker-archive layout containerd imports.
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	entries := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries[h.Name] = b
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != ref || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json = %+v, want one image tagged %s with one layer", manifest, ref)
	}
	for _, p := range append([]string{manifest[0].Config}, manifest[0].Layers...) {
		if _, ok := entries[p]; !ok {
			t.Errorf("manifest names %s, absent from the tarball", p)
		}
	}

	tag, _ := name.NewTag(ref)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/cns" {
		t.Errorf("config: os %s entrypoint %v", cf.OS, cf.Config.Entrypoint)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lt := tar.NewReader(rc)
	got := map[string]int64{}
	for {
		h, err := lt.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h.Mode
	}
	if got["cns"] != 0o755 || got["10-vnet.conflist"] != 0o644 {
		t.Errorf("layer files and modes: %v", got)
	}
}
