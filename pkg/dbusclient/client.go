// Package dbusclient is diskctl's way to reach diskd over D-Bus
// (org.diskd.Diskd1) instead of the Unix socket. It answers with the same
// values as the socket client (package ctlclient): disks and nodes of
// package disk and the types of package api, so diskctl prints the same
// output whichever way it asked. It links nothing of the daemon: only the
// contract (github.com/diskd/diskd/dbus) and godbus.
package dbusclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
)

// ErrNoDaemon wraps failures to reach diskd on the bus (no bus, or nobody
// owns org.diskd.Diskd1 and it cannot be activated), so callers can tell
// them from a daemon that answered with an error.
var ErrNoDaemon = errors.New("diskd is not on the bus")

// Client is a connection to diskd over D-Bus. Safe for concurrent use.
type Client struct {
	conn   *dbus.Conn
	cancel context.CancelFunc
	bus    string
	mgr    dbus.BusObject
}

// Dial connects to the bus ("system", "session" or an address) and checks
// that diskd answers there, starting it by bus activation if it can be.
func Dial(ctx context.Context, bus string) (*Client, error) {
	addr, err := contract.BusAddress(bus)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDaemon, err)
	}
	// The connection lives until Close; ctx bounds only the handshake.
	connCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	conn, err := dbus.Connect(addr, dbus.WithContext(connCtx))
	if !stop() || err != nil {
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%w (cannot connect to the %s: %v)", ErrNoDaemon, contract.BusLabel(bus), err)
	}
	c := &Client{conn: conn, cancel: cancel, bus: bus, mgr: conn.Object(contract.BusName, contract.ManagerPath)}
	// Peer.Ping on the name activates the daemon if it is not running.
	if err := conn.Object(contract.BusName, contract.RootPath).CallWithContext(ctx, contract.PeerInterface+".Ping", 0).Err; err != nil {
		c.Close()
		var de dbus.Error
		if errors.As(err, &de) && (de.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
			return nil, fmt.Errorf("%w (nothing owns %s on the %s)", ErrNoDaemon, contract.BusName, contract.BusLabel(bus))
		}
		return nil, fmt.Errorf("%w (%s on the %s: %v)", ErrNoDaemon, contract.BusName, contract.BusLabel(bus), err)
	}
	return c, nil
}

// Close ends the connection.
func (c *Client) Close() error {
	err := c.conn.Close()
	c.cancel()
	return err
}

// call calls a Manager method.
func (c *Client) call(ctx context.Context, method string, args ...any) ([]any, error) {
	call := c.mgr.CallWithContext(ctx, contract.ManagerInterface+"."+method, 0, args...)
	return call.Body, call.Err
}

func noOptions() map[string]dbus.Variant { return map[string]dbus.Variant{} }

// List returns the disks the daemon knows that f keeps, in the daemon's
// order; the daemon filters (GetBlockDevices' machine, present and label
// options).
func (c *Client) List(ctx context.Context, f api.ListFilter) ([]disk.Disk, error) {
	opts := noOptions()
	if f.Host != "" {
		opts["machine"] = dbus.MakeVariant(f.Host)
	}
	if f.Present {
		opts["present"] = dbus.MakeVariant(true)
	}
	if f.Label != "" {
		opts["label"] = dbus.MakeVariant(f.Label)
	}
	var paths []dbus.ObjectPath
	body, err := c.call(ctx, "GetBlockDevices", opts)
	if err == nil {
		err = dbus.Store(body, &paths)
	}
	if err != nil {
		return nil, err
	}
	return c.disks(ctx, paths)
}

// Where returns the disks that q names, present first, as `where` does.
func (c *Client) Where(ctx context.Context, q string) ([]disk.Disk, error) {
	if q == "" {
		return nil, errors.New("usage: where LABEL|UUID")
	}
	var paths []dbus.ObjectPath
	body, err := c.call(ctx, "ResolveDevice", map[string]dbus.Variant{"spec": dbus.MakeVariant(q)}, noOptions())
	if err == nil {
		err = dbus.Store(body, &paths)
	}
	if err != nil {
		return nil, err
	}
	return c.disks(ctx, paths)
}

// History returns the disks that q names, each with where and when it was
// seen, newest first, as `history` does. NotFound is an empty answer, as
// on the socket.
func (c *Client) History(ctx context.Context, q string) ([]disk.History, error) {
	if q == "" {
		return nil, errors.New("usage: history LABEL|UUID")
	}
	var reply []struct {
		Block     dbus.ObjectPath
		Sightings []struct {
			NodeID, HostName, KernelName string
			Device                       []byte
			FirstSeen, LastSeen          uint64
		}
	}
	body, err := c.call(ctx, "History", q, noOptions())
	var de dbus.Error
	if errors.As(err, &de) && de.Name == contract.ErrorNotFound {
		return []disk.History{}, nil
	}
	if err == nil {
		err = dbus.Store(body, &reply)
	}
	if err != nil {
		return nil, err
	}
	paths := make([]dbus.ObjectPath, len(reply))
	for i, r := range reply {
		paths[i] = r.Block
	}
	ds, err := c.disksAt(ctx, paths)
	if err != nil {
		return nil, err
	}
	out := make([]disk.History, 0, len(reply))
	for i, r := range reply {
		if ds[i] == nil {
			continue // forgotten between the calls
		}
		h := disk.History{Disk: *ds[i], Sightings: make([]disk.Sighting, len(r.Sightings))}
		for j, sg := range r.Sightings {
			h.Sightings[j] = disk.Sighting{Node: disk.NodeID(sg.NodeID), Host: sg.HostName, Name: sg.KernelName,
				Device: contract.FromCBytes(sg.Device), FirstSeen: contract.FromUsec(sg.FirstSeen), LastSeen: contract.FromUsec(sg.LastSeen)}
		}
		out = append(out, h)
	}
	return out, nil
}

// fewObjects is how many objects are fetched one by one (GetAll) before
// it is cheaper to fetch everything (GetManagedObjects) in one call.
const fewObjects = 16

// disks fetches the block device objects at paths, keeping their order.
// Objects that went away between the calls are skipped.
func (c *Client) disks(ctx context.Context, paths []dbus.ObjectPath) ([]disk.Disk, error) {
	at, err := c.disksAt(ctx, paths)
	if err != nil {
		return nil, err
	}
	out := make([]disk.Disk, 0, len(paths)) // never nil, as the socket's "[]"
	for _, d := range at {
		if d != nil {
			out = append(out, *d)
		}
	}
	return out, nil
}

// disksAt fetches the block device objects at paths: one entry per path,
// nil for an object that went away between the calls.
func (c *Client) disksAt(ctx context.Context, paths []dbus.ObjectPath) ([]*disk.Disk, error) {
	out := make([]*disk.Disk, len(paths))
	if len(paths) == 0 {
		return out, nil
	}
	var get func(p dbus.ObjectPath) (contract.Ifaces, error)
	if len(paths) <= fewObjects {
		get = func(p dbus.ObjectPath) (contract.Ifaces, error) {
			return c.getAll(ctx, p, contract.BlockInterface, contract.FilesystemInterface)
		}
	} else {
		objs, err := c.managedObjects(ctx)
		if err != nil {
			return nil, err
		}
		get = func(p dbus.ObjectPath) (contract.Ifaces, error) { return objs[p], nil }
	}
	for i, p := range paths {
		ifs, err := get(p)
		if err != nil {
			return nil, err
		}
		if ifs[contract.BlockInterface] == nil {
			continue
		}
		d, err := contract.DiskFromInterfaces(ifs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out[i] = &d
	}
	return out, nil
}

// getAll reads the named interfaces of one object; interfaces (or the
// object) it does not have are left out.
func (c *Client) getAll(ctx context.Context, p dbus.ObjectPath, names ...string) (contract.Ifaces, error) {
	out := contract.Ifaces{}
	for _, name := range names {
		var props map[string]dbus.Variant
		err := c.conn.Object(contract.BusName, p).CallWithContext(ctx, contract.PropertiesInterface+".GetAll", 0, name).Store(&props)
		var de dbus.Error
		switch {
		case errors.As(err, &de) && (de.Name == contract.ErrorUnknownInterface || de.Name == contract.ErrorUnknownObject):
			continue
		case err != nil:
			return nil, err
		}
		out[name] = props
	}
	return out, nil
}

// managedObjects is GetManagedObjects.
func (c *Client) managedObjects(ctx context.Context) (map[dbus.ObjectPath]contract.Ifaces, error) {
	call := c.conn.Object(contract.BusName, contract.RootPath).CallWithContext(ctx, contract.ObjectManagerInterface+".GetManagedObjects", 0)
	if call.Err != nil {
		return nil, call.Err
	}
	// The body decodes to exactly this type; dbus.Store would copy every
	// value again through reflection, which costs at 10,000 disks.
	if objs, ok := call.Body[0].(map[dbus.ObjectPath]map[string]map[string]dbus.Variant); ok && len(call.Body) == 1 {
		return objs, nil
	}
	var objs map[dbus.ObjectPath]contract.Ifaces
	return objs, call.Store(&objs)
}

// Peers returns the known nodes, this one first, then by name.
func (c *Client) Peers(ctx context.Context) ([]disk.Node, error) {
	var paths []dbus.ObjectPath
	body, err := c.call(ctx, "GetMachines", noOptions())
	if err == nil {
		err = dbus.Store(body, &paths)
	}
	if err != nil {
		return nil, err
	}
	var objs map[dbus.ObjectPath]contract.Ifaces
	if len(paths) > fewObjects {
		if objs, err = c.managedObjects(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]disk.Node, 0, len(paths))
	for _, p := range paths {
		ifs := objs[p]
		if objs == nil {
			if ifs, err = c.getAll(ctx, p, contract.MachineInterface); err != nil {
				return nil, err
			}
		}
		props, ok := ifs[contract.MachineInterface]
		if !ok {
			continue
		}
		n, err := contract.NodeFromProperties(props)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// Localhost returns this node's identity.
func (c *Client) Localhost(ctx context.Context) (api.Localhost, error) {
	ifs, err := c.getAll(ctx, contract.ManagerPath, contract.ManagerInterface)
	if err != nil {
		return api.Localhost{}, err
	}
	id, _ := ifs[contract.ManagerInterface]["NodeId"].Value().(string)
	name, _ := ifs[contract.ManagerInterface]["NodeName"].Value().(string)
	if id == "" {
		return api.Localhost{}, errors.New("the daemon did not say its node ID")
	}
	l := api.Localhost{NodeID: disk.NodeID(id), Name: name}
	mifs, err := c.getAll(ctx, contract.MachinePath(l.NodeID), contract.MachineInterface)
	if err != nil {
		return api.Localhost{}, err
	}
	if props, ok := mifs[contract.MachineInterface]; ok {
		n, err := contract.NodeFromProperties(props)
		if err != nil {
			return api.Localhost{}, err
		}
		l.Addresses = n.Addresses
	}
	return l, nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	var js string
	body, err := c.call(ctx, "GetStatus", noOptions())
	if err == nil {
		err = dbus.Store(body, &js)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return s, fmt.Errorf("status: malformed reply: %w", err)
	}
	return s, nil
}

// Refresh asks for a rescan and waits for it. Over D-Bus it is for root.
func (c *Client) Refresh(ctx context.Context) error {
	_, err := c.call(ctx, "Refresh", noOptions())
	return err
}

// Announce is not offered over D-Bus.
func (c *Client) Announce(ctx context.Context) error {
	return errors.New("announce is not available over D-Bus; use the socket")
}

// Ping asks every peer to answer. Over D-Bus it is for root.
func (c *Client) Ping(ctx context.Context) (api.PingResult, error) {
	var n uint32
	body, err := c.call(ctx, "Ping", noOptions())
	if err == nil {
		err = dbus.Store(body, &n)
	}
	return api.PingResult{Answered: int(n)}, err
}

// now is the time stamped on watch events: signals carry none.
func now() time.Time { return time.Now() }

// Mount has the machine that has the disk q names mount it, through its
// object's Filesystem.Mount.
func (c *Client) Mount(ctx context.Context, q string, rw bool) (api.MountResult, error) {
	p, d, err := c.presentOne(ctx, q)
	if err != nil {
		return api.MountResult{}, err
	}
	opts := noOptions()
	if rw {
		opts["options"] = dbus.MakeVariant("rw")
	}
	r := api.MountResult{Disk: q, Host: d.Host, NodeID: d.Node, Device: d.Device, RW: rw}
	call := c.conn.Object(contract.BusName, p).CallWithContext(ctx, contract.FilesystemInterface+".Mount", 0, opts)
	if call.Err != nil {
		return r, call.Err
	}
	return r, dbus.Store(call.Body, &r.Path)
}

// Unmount has the machine that has the disk q names unmount it.
func (c *Client) Unmount(ctx context.Context, q string, force bool) (api.MountResult, error) {
	p, d, err := c.presentOne(ctx, q)
	if err != nil {
		return api.MountResult{}, err
	}
	opts := noOptions()
	if force {
		opts["force"] = dbus.MakeVariant(true)
	}
	r := api.MountResult{Disk: q, Host: d.Host, NodeID: d.Node, Device: d.Device}
	if len(d.Mounts) > 0 {
		r.Path = d.Mounts[0]
	}
	return r, c.conn.Object(contract.BusName, p).CallWithContext(ctx, contract.FilesystemInterface+".Unmount", 0, opts).Err
}

// presentOne resolves q to the one present disk it names.
func (c *Client) presentOne(ctx context.Context, q string) (dbus.ObjectPath, disk.Disk, error) {
	var paths []dbus.ObjectPath
	body, err := c.call(ctx, "ResolveDevice", map[string]dbus.Variant{"spec": dbus.MakeVariant(q)}, noOptions())
	if err == nil {
		err = dbus.Store(body, &paths)
	}
	if err != nil {
		return "", disk.Disk{}, err
	}
	var found []dbus.ObjectPath
	var d disk.Disk
	for _, p := range paths {
		ds, err := c.disks(ctx, []dbus.ObjectPath{p})
		if err != nil {
			return "", disk.Disk{}, err
		}
		if len(ds) == 1 && ds[0].Present {
			found, d = append(found, p), ds[0]
		}
	}
	switch {
	case len(found) > 1:
		return "", disk.Disk{}, fmt.Errorf("%d disks answer to %q; name one by its UUID", len(found), q)
	case len(found) == 0 && len(paths) > 0:
		return "", disk.Disk{}, fmt.Errorf("%s: disk not present", q)
	case len(found) == 0:
		return "", disk.Disk{}, fmt.Errorf("%s: not known on this network", q)
	}
	return found[0], d, nil
}
