package dbusclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
)

// Watch calls fn for each change until ctx ends (nil) or the daemon leaves
// the bus (an error). It follows the ObjectManager's signals with a local
// copy of the objects, seeded by GetManagedObjects, and turns them into
// the socket's events:
//
//   - InterfacesAdded with Block: "added"; with Machine: "node-changed";
//   - InterfacesRemoved with Block: "forgotten"; with Machine: "node-forgotten";
//   - PropertiesChanged, or Filesystem coming or going: "changed" and
//     "node-changed".
//
// A machine's Disks and LastSeen, and a disk's LastSeen alone, change
// without a store event, so they update the copy silently. Events carry
// the time they were received. Changes the daemon batched arrive as one
// event (a disk added and changed within milliseconds is one "added").
func (c *Client) Watch(ctx context.Context, fn func(api.WatchEvent)) error {
	ch := make(chan *dbus.Signal, 4096)
	c.conn.Signal(ch)
	defer c.conn.RemoveSignal(ch)
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(contract.BusName), dbus.WithMatchPathNamespace(contract.RootPath)},
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, contract.BusName)},
	}
	for _, r := range rules {
		if err := c.conn.AddMatchSignalContext(ctx, r...); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		defer c.conn.RemoveMatchSignal(r...)
	}
	var owner string
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, contract.BusName).Store(&owner); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	// Signals that arrive while this runs are queued in ch and applied
	// after it; applying one twice is harmless.
	objs, err := c.managedObjects(ctx)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	w := &watcher{objs: objs, fn: fn}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-ch:
			if !ok {
				return errors.New("watch: lost the connection to the bus")
			}
			if s.Name == "org.freedesktop.DBus.NameOwnerChanged" {
				if len(s.Body) == 3 && s.Body[0] == contract.BusName && s.Body[1] == owner {
					return fmt.Errorf("watch: diskd left the %s", contract.BusLabel(c.bus))
				}
				continue
			}
			if s.Sender != owner {
				continue
			}
			if err := w.signal(s); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
		}
	}
}

// watcher keeps the copy of the objects and emits events.
type watcher struct {
	objs map[dbus.ObjectPath]contract.Ifaces
	fn   func(api.WatchEvent)
}

func isBlock(p dbus.ObjectPath) bool {
	return strings.HasPrefix(string(p), contract.BlockDevicesPath+"/")
}

func isMachine(p dbus.ObjectPath) bool {
	return strings.HasPrefix(string(p), contract.MachinesPath+"/")
}

func (w *watcher) signal(s *dbus.Signal) error {
	switch s.Name {
	case contract.ObjectManagerInterface + ".InterfacesAdded":
		var p dbus.ObjectPath
		var added contract.Ifaces
		if err := dbus.Store(s.Body, &p, &added); err != nil {
			return fmt.Errorf("InterfacesAdded: %w", err)
		}
		_, hadBlock := w.objs[p][contract.BlockInterface]
		w.merge(p, added)
		switch {
		case isBlock(p):
			_, newBlock := added[contract.BlockInterface]
			kind := "changed"
			if newBlock && !hadBlock {
				kind = "added"
			}
			return w.emitDisk(kind, p)
		case isMachine(p):
			return w.emitNode("node-changed", p)
		}
	case contract.ObjectManagerInterface + ".InterfacesRemoved":
		var p dbus.ObjectPath
		var names []string
		if err := dbus.Store(s.Body, &p, &names); err != nil {
			return fmt.Errorf("InterfacesRemoved: %w", err)
		}
		switch {
		case isBlock(p) && slices.Contains(names, contract.BlockInterface):
			err := w.emitDisk("forgotten", p)
			delete(w.objs, p)
			return err
		case isBlock(p):
			for _, n := range names {
				delete(w.objs[p], n)
			}
			return w.emitDisk("changed", p)
		case isMachine(p):
			err := w.emitNode("node-forgotten", p)
			delete(w.objs, p)
			return err
		}
	case contract.PropertiesInterface + ".PropertiesChanged":
		var iface string
		var changed map[string]dbus.Variant
		var invalidated []string
		if err := dbus.Store(s.Body, &iface, &changed, &invalidated); err != nil {
			return fmt.Errorf("PropertiesChanged: %w", err)
		}
		p := s.Path
		if _, ok := w.objs[p]; !ok {
			return nil // an object we never heard of; its InterfacesAdded will come
		}
		w.merge(p, contract.Ifaces{iface: changed})
		switch {
		case isBlock(p) && !onlyKeys(changed, "LastSeen"):
			return w.emitDisk("changed", p)
		case isMachine(p) && !onlyKeys(changed, "LastSeen", "Disks"):
			return w.emitNode("node-changed", p)
		}
	}
	return nil
}

// onlyKeys reports whether every key of m is one of keys.
func onlyKeys(m map[string]dbus.Variant, keys ...string) bool {
	for k := range m {
		if !slices.Contains(keys, k) {
			return false
		}
	}
	return true
}

// merge folds new interface properties into the copy.
func (w *watcher) merge(p dbus.ObjectPath, ifs contract.Ifaces) {
	obj := w.objs[p]
	if obj == nil {
		obj = contract.Ifaces{}
		w.objs[p] = obj
	}
	for name, props := range ifs {
		cur := obj[name]
		if cur == nil {
			cur = contract.Props{}
			obj[name] = cur
		}
		for k, v := range props {
			cur[k] = v
		}
	}
}

func (w *watcher) emitDisk(kind string, p dbus.ObjectPath) error {
	d, err := contract.DiskFromInterfaces(w.objs[p])
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	w.fn(api.WatchEvent{Kind: kind, Time: now(), Disk: &d})
	return nil
}

func (w *watcher) emitNode(kind string, p dbus.ObjectPath) error {
	n, err := contract.NodeFromProperties(w.objs[p][contract.MachineInterface])
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	w.fn(api.WatchEvent{Kind: kind, Time: now(), Node: &n})
	return nil
}
