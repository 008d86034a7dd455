package dbusapi

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

// managerImpl maps each Manager method of the contract to its
// implementation; checkManagerMethods ties the two together.
func (s *Service) managerImpl(srv *server) map[string]func(*call) ([]any, error) {
	return map[string]func(*call) ([]any, error){
		"GetMachines":     srv.getMachines,
		"GetBlockDevices": srv.getBlockDevices,
		"ResolveDevice":   srv.resolveDevice,
		"Where":           srv.where,
		"History":         srv.history,
		"Refresh":         srv.refresh,
		"Ping":            srv.ping,
		"GetStatus":       srv.getStatus,
	}
}

// checkManagerMethods fails unless the contract's Manager methods and the
// implementation are the same set.
func (s *Service) checkManagerMethods() error {
	impl := s.managerImpl(&server{svc: s})
	in, ok := s.ifaces[contract.ManagerInterface]
	if !ok {
		return fmt.Errorf("contract lacks %s", contract.ManagerInterface)
	}
	seen := map[string]bool{}
	for _, m := range in.Methods {
		if impl[m.Name] == nil {
			return fmt.Errorf("contract method %s.%s is not implemented", in.Name, m.Name)
		}
		seen[m.Name] = true
	}
	for name := range impl {
		if !seen[name] {
			return fmt.Errorf("method %s is implemented but not in the contract", name)
		}
	}
	return nil
}

// managerMethods is the Manager's method table for one connection.
func (s *Service) managerMethods(srv *server) methodTable {
	return s.methodTable(contract.ManagerInterface, s.managerImpl(srv))
}

// methodTable binds the implementations to the methods of interface
// iface, with the signatures the contract declares.
func (s *Service) methodTable(iface string, impl map[string]func(*call) ([]any, error)) methodTable {
	t := methodTable{}
	for _, m := range s.ifaces[iface].Methods {
		t[m.Name] = &method{
			name: iface + "." + m.Name,
			in:   contract.Signatures(m, "in"),
			out:  contract.Signatures(m, "out"),
			fn:   impl[m.Name],
		}
	}
	return t
}

// filter is the machine and present options shared by the queries, and
// GetBlockDevices' label glob.
type filter struct {
	node    disk.NodeID // "" for every machine
	present *bool
	label   string // checked by api.CheckLabelGlob; "" for any
}

// keep is the machine and present options; the label glob is matched
// outside the store's lock (byLabel), as the socket's list does.
func (f filter) keep(d *disk.Disk) bool {
	return (f.node == "" || d.Node == f.node) && (f.present == nil || d.Present == *f.present)
}

// byLabel drops the disks the label glob does not match.
func (f filter) byLabel(ds []disk.Disk) []disk.Disk {
	if f.label == "" {
		return ds
	}
	return slices.DeleteFunc(ds, func(d disk.Disk) bool { return !api.LabelMatches(f.label, d.Label) })
}

// parseOptions reads the allowed keys of an options dictionary, each with
// its type. Other keys are ignored, as UDisks2 ignores them: GNOME passes
// auth.no_user_interaction to every call.
func (srv *server) parseOptions(opts map[string]dbus.Variant, allowed ...string) (filter, error) {
	var f filter
	for _, k := range allowed {
		v, ok := opts[k]
		if !ok {
			continue
		}
		switch k {
		case "present":
			b, ok := v.Value().(bool)
			if !ok {
				return f, errorf(contract.ErrorInvalidArgs, "option present must be a boolean (b), not %s", v.Signature())
			}
			f.present = &b
		case "label":
			g, ok := v.Value().(string)
			if !ok {
				return f, errorf(contract.ErrorInvalidArgs, "option label must be a string (s), not %s", v.Signature())
			}
			if err := api.CheckLabelGlob(g); err != nil {
				return f, errorf(contract.ErrorInvalidArgs, "%s", err)
			}
			f.label = g
		case "machine":
			id, err := srv.machineOption(v)
			if err != nil {
				return f, err
			}
			f.node = id
		}
	}
	return f, nil
}

// machineOption resolves the machine option: an object path, a node ID or
// a node name. The NotFound message is the socket's, so diskctl prints the
// same whichever way it asked.
func (srv *server) machineOption(v dbus.Variant) (disk.NodeID, error) {
	st := srv.svc.store
	switch x := v.Value().(type) {
	case dbus.ObjectPath:
		id, err := contract.NodeFromMachinePath(x)
		if err == nil {
			if _, ok := st.Node(id); ok {
				return id, nil
			}
		}
		return "", errorf(contract.ErrorNotFound, "no machine at %s", api.Clip(string(x)))
	case string:
		for _, n := range st.Nodes() {
			if n.Name == x || string(n.ID) == x {
				return n.ID, nil
			}
		}
		return "", errorf(contract.ErrorNotFound, "no host named %s", api.Quote(x))
	}
	return "", errorf(contract.ErrorInvalidArgs, "option machine must be an object path (o) or a node ID or name (s), not %s", v.Signature())
}

func (srv *server) getMachines(c *call) ([]any, error) {
	if _, err := srv.parseOptions(c.args[0].(map[string]dbus.Variant)); err != nil {
		return nil, err
	}
	paths := []dbus.ObjectPath{}
	for _, n := range srv.svc.store.Nodes() {
		paths = append(paths, contract.MachinePath(n.ID))
	}
	return []any{paths}, nil
}

func (srv *server) getBlockDevices(c *call) ([]any, error) {
	f, err := srv.parseOptions(c.args[0].(map[string]dbus.Variant), "machine", "present", "label")
	if err != nil {
		return nil, err
	}
	return []any{blockPaths(f.byLabel(srv.svc.store.Disks(f.keep)))}, nil
}

func blockPaths(ds []disk.Disk) []dbus.ObjectPath {
	out := make([]dbus.ObjectPath, len(ds))
	for i := range ds {
		out[i] = contract.BlockPath(ds[i].Key())
	}
	return out
}

// devspecMatch reports whether d matches one devspec key.
func devspecMatch(key, want string, d *disk.Disk) bool {
	switch key {
	case "uuid":
		return d.UUID != "" && strings.EqualFold(d.UUID, want)
	case "label":
		return d.Label == want
	case "path":
		return d.Device == want
	case "partuuid":
		return d.PartUUID != "" && strings.EqualFold(d.PartUUID, want)
	case "partlabel":
		return d.PartLabel == want
	case "spec":
		return d.Matches(want)
	}
	return false
}

func (srv *server) resolveDevice(c *call) ([]any, error) {
	spec := c.args[0].(map[string]dbus.Variant)
	f, err := srv.parseOptions(c.args[1].(map[string]dbus.Variant), "machine", "present")
	if err != nil {
		return nil, err
	}
	keys := []string{"uuid", "label", "path", "partuuid", "partlabel", "spec"}
	if len(spec) == 0 {
		return nil, errorf(contract.ErrorInvalidArgs, "devspec is empty; give one or more of %s", strings.Join(keys, ", "))
	}
	want := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(spec)) {
		if !slices.Contains(keys, k) {
			return nil, errorf(contract.ErrorInvalidArgs, "unknown devspec key %s (known: %s)", api.Quote(k), strings.Join(keys, ", "))
		}
		s, ok := spec[k].Value().(string)
		if !ok {
			return nil, errorf(contract.ErrorInvalidArgs, "devspec %s must be a string (s), not %s", k, spec[k].Signature())
		}
		want[k] = s
	}
	ds := srv.svc.store.Disks(func(d *disk.Disk) bool {
		if !f.keep(d) {
			return false
		}
		for k, v := range want {
			if !devspecMatch(k, v, d) {
				return false
			}
		}
		return true
	})
	store.SortWhere(ds)
	return []any{blockPaths(ds)}, nil
}

// lookupArg checks the arguments Where and History share: a non-empty
// label_or_uuid and no options.
func (srv *server) lookupArg(c *call) (string, error) {
	q := c.args[0].(string)
	if _, err := srv.parseOptions(c.args[1].(map[string]dbus.Variant)); err != nil {
		return "", err
	}
	if q == "" {
		return "", errorf(contract.ErrorInvalidArgs, "label_or_uuid is empty")
	}
	return q, nil
}

// notKnown is the NotFound answer of Where and History.
func notKnown(q string) error {
	return errorf(contract.ErrorNotFound, "%s: not known on this network", api.Quote(q))
}

func (srv *server) where(c *call) ([]any, error) {
	q, err := srv.lookupArg(c)
	if err != nil {
		return nil, err
	}
	ds := srv.svc.store.Where(q)
	if len(ds) == 0 {
		return nil, notKnown(q)
	}
	d := ds[0]
	return []any{contract.MachinePath(d.Node), contract.BlockPath(d.Key()), d.Present, contract.Usec(d.LastSeen)}, nil
}

// historySighting and historyDisk are History's reply elements:
// (sssaytt) and (oa(sssaytt)).
type (
	historySighting struct {
		NodeID, HostName, KernelName string
		Device                       []byte
		FirstSeen, LastSeen          uint64
	}
	historyDisk struct {
		Block     dbus.ObjectPath
		Sightings []historySighting
	}
)

func (srv *server) history(c *call) ([]any, error) {
	q, err := srv.lookupArg(c)
	if err != nil {
		return nil, err
	}
	hs := srv.svc.store.History(q)
	if len(hs) == 0 {
		return nil, notKnown(q)
	}
	out := make([]historyDisk, len(hs))
	for i, h := range hs {
		out[i].Block = contract.BlockPath(h.Disk.Key())
		out[i].Sightings = make([]historySighting, len(h.Sightings))
		for j, sg := range h.Sightings {
			out[i].Sightings[j] = historySighting{NodeID: string(sg.Node), HostName: sg.Host, KernelName: sg.Name,
				Device: contract.CBytes(sg.Device), FirstSeen: contract.Usec(sg.FirstSeen), LastSeen: contract.Usec(sg.LastSeen)}
		}
	}
	return []any{out}, nil
}

func (srv *server) refresh(c *call) ([]any, error) {
	if _, err := srv.parseOptions(c.args[0].(map[string]dbus.Variant)); err != nil {
		return nil, err
	}
	if err := srv.authorize(c, "Refresh"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(srv.conn.Context(), srv.svc.cfg.CallTimeout)
	defer cancel()
	if err := srv.svc.be.Refresh(ctx); err != nil {
		return nil, errorf(contract.ErrorFailed, "refresh: %v", err)
	}
	return []any{}, nil
}

func (srv *server) ping(c *call) ([]any, error) {
	if _, err := srv.parseOptions(c.args[0].(map[string]dbus.Variant)); err != nil {
		return nil, err
	}
	if err := srv.authorize(c, "Ping"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(srv.conn.Context(), srv.svc.cfg.CallTimeout)
	defer cancel()
	n, err := srv.svc.be.Ping(ctx)
	if err != nil {
		return nil, errorf(contract.ErrorFailed, "ping: %v", err)
	}
	return []any{uint32(max(n, 0))}, nil
}

func (srv *server) getStatus(c *call) ([]any, error) {
	if _, err := srv.parseOptions(c.args[0].(map[string]dbus.Variant)); err != nil {
		return nil, err
	}
	s, err := srv.svc.statusJSON()
	if err != nil {
		return nil, errorf(contract.ErrorFailed, "status: %v", err)
	}
	return []any{s}, nil
}

// authorize asks the policy (authz, shared with the socket) whether the
// caller, whose uid the bus vouches for, may call the method; the policy
// logs its decisions.
func (srv *server) authorize(c *call, what string) error {
	caller, err := srv.caller(c, what)
	if err != nil {
		return err
	}
	if err := srv.svc.cfg.Policy.Check(caller, strings.ToLower(what)); err != nil {
		return errorf(contract.ErrorNotAuthorized, "%v", err)
	}
	return nil
}

// caller is the sender as the bus vouches for it (its uid).
func (srv *server) caller(c *call, what string) (authz.Caller, error) {
	ctx, cancel := context.WithTimeout(srv.conn.Context(), 5*time.Second)
	defer cancel()
	var uid uint32
	err := srv.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, c.sender).Store(&uid)
	if err != nil {
		srv.svc.log.Warn("refused a D-Bus call: cannot learn the caller's uid", "method", what, "sender", c.sender, "err", err)
		return authz.Caller{}, errorf(contract.ErrorNotAuthorized, "%s: cannot verify the caller (%v)", what, err)
	}
	return authz.Caller{UID: uid, Via: "D-Bus", Who: "sender " + c.sender}, nil
}
