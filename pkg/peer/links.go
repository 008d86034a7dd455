package peer

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/diskd/diskd/pkg/wire"
)

// The driver's side of the links: sending on every joined interface, and
// joining and leaving interfaces as they come and go.

// Send puts each datagram on every joined interface of every family, to
// every group, interleaved so the copies of one datagram travel together
// (the receiver's replay window then sees them side by side). A path whose
// send times out is skipped for the rest of the batch.
func (d *driver) Send(dgs [][]byte) {
	type path struct {
		fam  int
		c    mconn
		ifi  net.Interface
		g    netip.Addr
		dead bool
	}
	var paths []*path
	for _, fam := range []int{4, 6} {
		c := d.conns[fam]
		if c == nil {
			continue
		}
		groups := d.s.g4
		if fam == 6 {
			groups = d.s.send6
		}
		for _, idx := range slices.Sorted(mapKeys(d.joined[fam])) {
			for _, g := range groups {
				paths = append(paths, &path{fam: fam, c: c, ifi: d.joined[fam][idx].ifi, g: g})
			}
		}
	}
	ctr := &d.s.ctr
	for _, b := range dgs {
		for _, p := range paths {
			if p.dead {
				continue
			}
			if err := p.c.send(b, &p.ifi, p.g, d.cfg.Port); err != nil {
				ctr.inc(sendFailed)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					p.dead = true
				}
				d.s.logLimited(logSendFailed, slog.LevelWarn, "send failed", "interface", p.ifi.Name, "group", p.g, "err", err)
				continue
			}
			if p.fam == 4 {
				ctr.inc(sentDatagrams4)
				ctr.add(sentBytes4, uint64(len(b)))
			} else {
				ctr.inc(sentDatagrams6)
				ctr.add(sentBytes6, uint64(len(b)))
			}
		}
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// rescan joins the groups on usable interfaces not yet joined and leaves
// those gone. A new link gets a hello: its peers have not heard us.
func (d *driver) rescan(now time.Time) {
	var infos []ifaceInfo
	err := d.cfg.Enter(func() (err error) {
		infos, err = scanInterfaces(d.cfg.Interfaces)
		return err
	})
	if err != nil {
		d.s.logLimited(logScanFailed, slog.LevelWarn, "interface scan failed", "err", err)
		return
	}
	grew := false
	for fam, c := range d.conns {
		groups := d.s.g4
		if fam == 6 {
			groups = d.s.g6
		}
		want := map[int]ifaceInfo{}
		for _, in := range infos {
			if fam == 4 && in.v4 || fam == 6 && in.v6 {
				want[in.ifi.Index] = in
			}
		}
		for idx, old := range d.joined[fam] {
			if in, ok := want[idx]; !ok || in.ifi.Name != old.ifi.Name {
				for _, g := range groups {
					_ = c.leave(&old.ifi, g) // fails when the interface is gone: fine
				}
				delete(d.joined[fam], idx)
				d.s.log.Info("left interface", "interface", old.ifi.Name, "family", fam)
			}
		}
		for idx, in := range want {
			if old, ok := d.joined[fam][idx]; ok {
				old.addrs = in.addrs
				d.joined[fam][idx] = old
				continue
			}
			var jerr error
			for _, g := range groups {
				jerr = errors.Join(jerr, c.join(&in.ifi, g))
			}
			if jerr != nil {
				d.s.logLimited(logJoinFailed, slog.LevelWarn, "cannot join group", "interface", in.ifi.Name, "family", fam, "err", jerr)
				continue
			}
			d.joined[fam][idx] = in
			grew = true
			d.s.log.Info("joined interface", "interface", in.ifi.Name, "family", fam, "groups", groups)
		}
	}
	if len(infos) == 0 && len(d.cfg.Interfaces) > 0 {
		d.s.logLimited(logNoInterface, slog.LevelWarn, "none of the configured interfaces is usable", "interfaces", d.cfg.Interfaces)
	}
	d.m.Interfaces(now, d.publishInterfaces(), grew)
}

// publishInterfaces updates the Status snapshot and the local node's
// addresses, and returns our routable ones (for heartbeats).
func (d *driver) publishInterfaces() []netip.Addr {
	names := map[string][]string{}
	var addrs []string
	ifnames := map[int]string{}
	for _, fam := range []int{4, 6} {
		for _, in := range d.joined[fam] {
			ifnames[in.ifi.Index] = in.ifi.Name
			names[in.ifi.Name] = append(names[in.ifi.Name], fmt.Sprintf("ipv%d", fam))
			for _, a := range in.addrs {
				if fam == 4 && a.Is4() || fam == 6 && a.Is6() {
					addrs = append(addrs, a.String())
				}
			}
		}
	}
	var list []string
	for n, fams := range names {
		list = append(list, n+" ("+strings.Join(fams, " ")+")")
	}
	slices.Sort(list)
	slices.Sort(addrs)
	d.s.mu.Lock()
	d.s.ifaces = list
	d.s.mu.Unlock()
	d.s.ifnames.Store(&ifnames)
	d.s.st.SetLocalAddresses(slices.Compact(addrs))
	var routable []netip.Addr
	for _, a := range slices.Compact(addrs) {
		if ip := netip.MustParseAddr(a); ip.IsGlobalUnicast() && len(routable) < wire.MaxAddrs {
			routable = append(routable, ip)
		}
	}
	return routable
}
