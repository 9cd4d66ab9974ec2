// Package plugin is the vnet-cni CNI plugin: it asks cns for the pod's VNet address and builds
// the transparent datapath with netlink. It implements CNI 1.1 (ADD, DEL, CHECK, GC,
// STATUS; VERSION comes from skel) and stays light: no cloud SDK, no metrics library, no
// grpc-go, net/http or protobuf runtime (packages unary and cnswire speak to cns), so the
// runtime can exec it for every pod at little cost.
//
// Transparent datapath (as Azure CNI and the AWS VPC CNI build it):
//
//	pod netns:  eth0 IP/32; 169.254.1.1 dev eth0 scope link; default via 169.254.1.1;
//	            neighbour 169.254.1.1 -> host veth MAC (permanent)
//	node netns: vnet<hash> (host veth); IP/32 dev vnet<hash>; ip_forward=1
//
// The pod's subnet is not on its link: every packet leaves through the node, which routes it
// like the VNet does, so pods talk to each other and to the VNet with no NAT.
//
// ADD asks cns while it builds what needs no address (the veth pair, the pod's gateway route
// and neighbour, the node side), through one netlink socket per namespace; the address and
// routes wait for the grant.
package plugin
