// Command vnet-cni is the CNI plugin that gives pods VNet addresses from cns.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vnet-cni/vnet-cni/plugin"
	_ "github.com/vnet-cni/vnet-cni/plugin/oneproc" // GOMAXPROCS 1, set early in init
)

func main() {
	skel.PluginMainFuncs(plugin.New().Funcs(), version.PluginSupports("0.4.0", "1.0.0", "1.1.0"),
		"vnet-cni: VNet addresses for pods from cns, transparent datapath")
}
