package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/plugin/cnswire"
	"github.com/vnet-cni/vnet-cni/plugin/unary"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// Plugin holds the handlers' dependencies.
type Plugin struct {
	Dial Dialer
	Now  func() time.Time
}

// New returns a plugin talking gRPC to cns.
func New() *Plugin { return &Plugin{Dial: DialCNS, Now: time.Now} }

// Funcs returns the handlers for skel, each error mapped to its CNI code.
func (p *Plugin) Funcs() skel.CNIFuncs {
	wrap := func(f func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			if err := toCNIError(f(a)); err != nil {
				return err
			}
			return nil
		}
	}
	return skel.CNIFuncs{Add: wrap(p.Add), Del: wrap(p.Del), Check: wrap(p.Check), GC: wrap(p.GC), Status: wrap(p.Status)}
}

// k8sArgs are the CNI_ARGS kubelet passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID       types.UnmarshallableString //nolint:revive // CNI_ARGS key (kubelet passes it since 1.24)
}

// parseK8sArgs reads the pod's name and namespace from CNI_ARGS.
func parseK8sArgs(s string) (k8sArgs, error) {
	var ka k8sArgs
	if err := types.LoadArgs(s, &ka); err != nil {
		return ka, fmt.Errorf("%w: CNI_ARGS: %w", errEnv, err)
	}
	return ka, nil
}

// session dials cns for one handler call and bounds it with the configured timeout.
func (p *Plugin) session(conf *Config) (CNS, context.Context, func(), error) {
	client, err := p.Dial(conf)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.RequestTimeout.Duration)
	return client, ctx, func() { cancel(); client.Close() }, nil
}

// Add asks cns for the pod's address and builds the datapath, the two at once: the veth and
// everything on it that needs no address are built while cns answers, and only the address,
// the routes and the node's /32 route wait for the grant. Whatever fails, the call waits for
// both before it returns, and undoes only what it made: a refused request removes the veth;
// a failure after the grant removes the veth and releases the address (named return +
// deferred rollback).
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkAttachment(conf.Name, args.ContainerID, args.IfName); err != nil {
		return err
	}
	ka, err := parseK8sArgs(args.Args)
	if err != nil {
		return err
	}
	if args.Netns == "" {
		return fmt.Errorf("%w: CNI_NETNS is required for ADD", errEnv)
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open pod network namespace %q: %w", args.Netns, err)
	}
	defer podNS.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("open node network namespace: %w", err)
	}
	defer hostNS.Close()
	nl, err := openLinks(hostNS, podNS)
	if err != nil {
		return err
	}
	defer nl.Close()
	hostName := HostVethName(args.ContainerID, args.IfName)
	// Refuse before asking for an address, so a refused ADD holds nothing.
	if err := refuseExisting(nl, args, hostName); err != nil {
		return err
	}
	client, ctx, done, err := p.session(conf)
	if err != nil {
		return err
	}
	defer done()
	// cns refuses (ALREADY_EXISTS) a key held for another network or netns, so an address
	// granted here is this key's: the rollback below undoes only what this call made (the
	// host veth did not exist at the pre-checks), and releases the grant unless a concurrent
	// ADD of the same key turns out to hold it (below).
	granted := make(chan grant, 1)
	go func() {
		resp, err := client.RequestIPs(ctx, cnswire.IPRequest{ContainerID: args.ContainerID, IfName: args.IfName,
			Netns: args.Netns, PodNamespace: string(ka.K8S_POD_NAMESPACE), PodName: string(ka.K8S_POD_NAME), Network: conf.Name,
			PodUID: string(ka.K8S_POD_UID)})
		granted <- grant{resp, err}
	}()
	mtu := conf.MTU
	if mtu == 0 {
		mtu = DefaultMTU // cns's MTU, when it differs, is set once the grant is in
	}
	v, verr := nl.buildVeth(args.IfName, hostName, contract.HostVethAlias(conf.Name, args.ContainerID, args.IfName), mtu)
	g := <-granted
	if g.err != nil {
		return undoVeth(nl, v, g.err, verr)
	}
	if errors.Is(verr, errExists) {
		// A name appeared since the pre-checks. If it is this key's host veth, a concurrent ADD
		// of the same key made the pair (both ends at once), and the grant (cns answers one key
		// once) is that call's too: it is not released. Otherwise the pod's interface name is
		// another attachment's, and the grant is this call's alone: the rollback releases it.
		_, same, lerr := linkExists(nl.host, hostName)
		if lerr != nil { // unknown whose: leaking until DEL or GC is safe, releasing is not
			return errors.Join(verr, fmt.Errorf("look up host veth %s: %w", hostName, lerr))
		}
		if same {
			return verr
		}
	}
	defer func() {
		if err == nil {
			return
		}
		if v != nil {
			if terr := nl.remove(v); terr != nil {
				err = errors.Join(err, fmt.Errorf("rollback datapath: %w", terr))
			}
		}
		if rerr := p.release(conf, client, args.ContainerID, args.IfName); rerr != nil {
			err = errors.Join(err, fmt.Errorf("rollback address: %w", rerr))
		}
	}()
	if verr != nil {
		return verr
	}
	pn, err := grantToPodNet(g.resp, conf.MTU)
	if err != nil {
		return err
	}
	if err := nl.address(v, pn); err != nil {
		return err
	}
	hostIf, contIf := v.interfaces()
	res, err := mergePrevResult(conf.PrevResult, buildResult(conf, hostIf, contIf, args.Netns, pn))
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// grant is cns's answer to RequestIPs.
type grant struct {
	resp cnswire.Grant
	err  error
}

// refuseExisting refuses an ADD whose pod interface exists (errExists), or whose host veth
// does: that veth belongs to another sandbox holding this (container ID, ifname), or to what
// is left of one; building over it would fail, and the rollback would tear down a live pod.
func refuseExisting(nl *links, args *skel.CmdArgs, hostName string) error {
	if _, exists, err := linkExists(nl.pod, args.IfName); err != nil {
		return fmt.Errorf("look up %s in %s: %w", args.IfName, args.Netns, err)
	} else if exists {
		return fmt.Errorf("%w: %s already exists in %s", errExists, args.IfName, args.Netns)
	}
	if link, exists, err := linkExists(nl.host, hostName); err != nil {
		return fmt.Errorf("look up host veth %s: %w", hostName, err)
	} else if exists {
		label := ""
		if a := link.Attrs().Alias; a != "" {
			label = fmt.Sprintf(" (%q)", a)
		}
		return fmt.Errorf("%w: host veth %s%s of %s/%s exists: another sandbox holds this container ID and ifname; DEL it first",
			errExists, hostName, label, args.ContainerID, args.IfName)
	}
	return nil
}

// undoVeth handles a request cns refused: nothing was granted, so only the veth this call
// made (v, nil when none) is removed. cns's error decides the CNI code; a datapath error
// of the same call is kept in the message only.
func undoVeth(nl *links, v *veth, cnsErr, vethErr error) error {
	err := cnsErr
	if vethErr != nil {
		err = errors.Join(err, fmt.Errorf("datapath: %v", vethErr)) //nolint:errorlint // text only: cns's error sets the code
	}
	if v != nil {
		if terr := nl.remove(v); terr != nil {
			err = errors.Join(err, fmt.Errorf("rollback datapath: %w", terr))
		}
	}
	return err
}

func grantToPodNet(resp cnswire.Grant, mtu int) (podNet, error) {
	if len(resp.IPConfigs) == 0 {
		return podNet{}, errors.New("cns granted no address")
	}
	c := resp.IPConfigs[0]
	pfx, err := netip.ParsePrefix(c.Address)
	if err != nil || !pfx.Addr().Is4() {
		return podNet{}, fmt.Errorf("cns granted an unusable address %q: %w", c.Address, err)
	}
	pn := podNet{IP: pfx.Addr(), MTU: mtu}
	if pn.MTU == 0 {
		pn.MTU = int(c.MTU)
	}
	if pn.MTU == 0 {
		pn.MTU = DefaultMTU
	}
	for _, r := range c.Routes {
		d, err := netip.ParsePrefix(r)
		if err != nil || !d.Addr().Is4() {
			return podNet{}, fmt.Errorf("cns sent an unusable route %q", r)
		}
		pn.Routes = append(pn.Routes, d.Masked())
	}
	if len(pn.Routes) == 0 {
		pn.Routes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	}
	return pn, nil
}

func buildResult(conf *Config, hostIf, contIf net.Interface, netns string, pn podNet) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
			{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Sandbox: netns, Mtu: pn.MTU},
		},
		IPs: []*current.IPConfig{{Interface: current.Int(1), Address: *ipNet32(pn.IP), Gateway: podGateway}},
		DNS: conf.DNS,
	}
	for _, r := range pn.Routes {
		res.Routes = append(res.Routes, &types.Route{Dst: *prefixNet(r), GW: podGateway})
	}
	return res
}

// release returns an address to cns; when cns cannot take it now, the release is spooled
// for cns to replay, so a pod is never stuck terminating while cns restarts.
func (p *Plugin) release(conf *Config, client CNS, containerID, ifname string) error {
	var err error
	if client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), conf.RequestTimeout.Duration)
		err = client.ReleaseIPs(ctx, conf.Name, containerID, ifname)
		cancel()
		if err == nil {
			return nil
		}
		// A key cns refuses to read is one it cannot hold (it refused to allocate it):
		// nothing to release, and DEL must not leave the pod stuck terminating.
		if grpcCode(err) == unary.InvalidArgument {
			return nil
		}
	}
	if client != nil && !errors.Is(err, errUnreachable) && !transient(err) {
		return err
	}
	if _, serr := spoolRelease(conf.ReleaseSpool, conf.Name, containerID, ifname, p.Now()); serr != nil {
		return errors.Join(err, serr)
	}
	return nil
}

func transient(err error) bool {
	switch grpcCode(err) {
	case unary.Unavailable, unary.DeadlineExceeded, unary.Canceled:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// Del tears the datapath down and releases the address. A missing namespace, link or
// allocation is success, and so is an unreachable cns once the release is spooled. The config
// is read leniently (a conflist upgraded since ADD must not leave the pod stuck terminating),
// and a host veth labelled for another network is left to that network.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, err := parseDelConfig(args.StdinData)
	if err != nil {
		return err
	}
	others, err := removeDatapath(conf.Name, args.Netns, args.IfName, HostVethName(args.ContainerID, args.IfName))
	if err != nil {
		return err
	}
	if others {
		// The key is another network's live attachment: nothing here is this network's to
		// remove, and no release is spooled that could later free that pod's address.
		return nil
	}
	client, err := p.Dial(conf)
	if err != nil && !errors.Is(err, errUnreachable) {
		return err
	}
	if client != nil {
		defer client.Close()
	}
	return p.release(conf, client, args.ContainerID, args.IfName)
}

// Check verifies the datapath against prevResult and that cns still holds the address.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return fmt.Errorf("%w: CHECK needs prevResult", errConfig)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("%w: prevResult: %w", errConfig, err)
	}
	addr, err := containerAddr(prev, args.IfName, args.Netns)
	if err != nil {
		return err
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open pod network namespace %q: %w", args.Netns, err)
	}
	defer podNS.Close()
	if err := checkDatapath(podNS, args.IfName, HostVethName(args.ContainerID, args.IfName), addr); err != nil {
		return err
	}
	client, ctx, done, err := p.session(conf)
	if err != nil {
		return err
	}
	defer done()
	allocs, err := client.ListAllocations(ctx)
	if err != nil {
		return err
	}
	for _, a := range allocs {
		if a.ContainerID == args.ContainerID && a.IfName == args.IfName {
			if a.Address != addr.String() {
				return fmt.Errorf("%w: cns holds %s for this pod, the datapath has %s", errCheck, a.Address, addr)
			}
			if a.Missing {
				return fmt.Errorf("%w: %s is no longer on the node NIC", errCheck, addr)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: cns holds no address for %s/%s", errCheck, args.ContainerID, args.IfName)
}

// containerAddr finds the IPv4 address prevResult gave the pod interface.
func containerAddr(r *current.Result, ifname, netns string) (netip.Addr, error) {
	for _, c := range r.IPs {
		if c.Interface == nil || *c.Interface < 0 || *c.Interface >= len(r.Interfaces) {
			continue
		}
		itf := r.Interfaces[*c.Interface]
		if itf.Name != ifname || (itf.Sandbox != "" && itf.Sandbox != netns) {
			continue
		}
		if a, ok := netip.AddrFromSlice(c.Address.IP.To4()); ok {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: prevResult has no IPv4 address for %s", errConfig, ifname)
}

// GC releases in cns every allocation of this network (the conflist name) not in
// cni.dev/valid-attachments, and deletes the host veths labelled for this network that belong
// to no valid attachment. Other networks' allocations and veths are not touched: the list
// names only the attachments of the network being collected.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	keep := map[types.GCAttachment]bool{}
	valid := make([]cnswire.Attachment, 0, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		keep[a] = true
		valid = append(valid, cnswire.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	_, sweepErr := sweepNetworkVeths(conf.Name, keep)
	client, ctx, done, err := p.session(conf)
	if err != nil {
		return errors.Join(err, sweepErr)
	}
	defer done()
	err = client.GarbageCollect(ctx, conf.Name, valid)
	return errors.Join(err, sweepErr)
}

// Status reports whether pods can be added: CNI 50 when cns is down or out of addresses.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	client, ctx, done, err := p.session(conf)
	if err != nil {
		return err
	}
	defer done()
	st, err := client.Status(ctx)
	if err != nil {
		return err
	}
	if !st.Ready {
		return types.NewError(types.ErrPluginNotAvailable, "cns not ready: "+st.Message, st.Reason.String())
	}
	return nil
}
