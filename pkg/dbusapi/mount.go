package dbusapi

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
)

// filesystemMethods is the Filesystem interface's method table.
func (s *Service) filesystemMethods(srv *server) methodTable {
	return s.methodTable(contract.FilesystemInterface,
		map[string]func(*call) ([]any, error){"Mount": srv.mount, "Unmount": srv.unmount})
}

func (srv *server) mount(c *call) ([]any, error) {
	opts := c.args[0].(map[string]dbus.Variant)
	rw := false
	if v, ok := opts["options"]; ok {
		s, ok := v.Value().(string)
		if !ok {
			return nil, errorf(contract.ErrorInvalidArgs, `option "options" must be a string (s)`)
		}
		rw = slices.Contains(strings.Split(s, ","), "rw")
	}
	d, uid, err := srv.mountTarget(c, "Mount", opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(srv.conn.Context(), srv.svc.cfg.CallTimeout)
	defer cancel()
	r, err := srv.svc.be.Mount(ctx, d.Spec(), rw, uid)
	if err != nil {
		return nil, errorf(contract.ErrorFailed, "%v", err)
	}
	return []any{r.Path}, nil
}

func (srv *server) unmount(c *call) ([]any, error) {
	opts := c.args[0].(map[string]dbus.Variant)
	force, err := boolOption(opts, "force")
	if err != nil {
		return nil, err
	}
	d, uid, err := srv.mountTarget(c, "Unmount", opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(srv.conn.Context(), srv.svc.cfg.CallTimeout)
	defer cancel()
	if _, err := srv.svc.be.Unmount(ctx, d.Spec(), force, uid); err != nil {
		return nil, errorf(contract.ErrorFailed, "%v", err)
	}
	return []any{}, nil
}

// mountTarget authorizes the caller and returns the disk the call's object
// is, with the caller's uid.
func (srv *server) mountTarget(c *call, what string, opts map[string]dbus.Variant) (disk.Disk, uint32, error) {
	noUI, err := boolOption(opts, "auth.no_user_interaction")
	if err != nil {
		return disk.Disk{}, 0, err
	}
	uid, err := srv.authorizeAction(c, what, contract.PolkitMountAction, !noUI)
	if err != nil {
		return disk.Disk{}, 0, err
	}
	o, ok := srv.current(c.path)
	b, isBlock := o.(blockObj)
	if !ok || !isBlock {
		return disk.Disk{}, 0, errorf(contract.ErrorNotFound, "no block device at %s", c.path)
	}
	return b.d, uid, nil
}

func boolOption(opts map[string]dbus.Variant, key string) (bool, error) {
	v, ok := opts[key]
	if !ok {
		return false, nil
	}
	b, ok := v.Value().(bool)
	if !ok {
		return false, errorf(contract.ErrorInvalidArgs, "option %q must be a boolean (b)", key)
	}
	return b, nil
}

// authorizeAction lets the caller through when the local policy makes it
// an admin, else when polkit allows action for it (interactive: polkit may
// ask the user to authenticate). Without polkit on the bus, only admins.
// It returns the caller's uid; every decision is logged.
func (srv *server) authorizeAction(c *call, what, action string, interactive bool) (uint32, error) {
	caller, err := srv.caller(c, what)
	if err != nil {
		return 0, err
	}
	refusal := srv.svc.cfg.Policy.Check(caller, strings.ToLower(what))
	if refusal == nil {
		return caller.UID, nil
	}
	// polkit may show a password dialog: give the user time.
	ctx, cancel := context.WithTimeout(srv.conn.Context(), 2*time.Minute)
	defer cancel()
	ok, err := polkitCheck(ctx, srv.conn, c.sender, action, interactive)
	log := srv.svc.log
	switch {
	case err != nil:
		log.Warn("refused a D-Bus call: not an admin, and polkit cannot decide", "method", what, "uid", caller.UID, "err", err)
		return 0, errorf(contract.ErrorNotAuthorized, "%v (polkit: %v)", refusal, err)
	case !ok:
		log.Warn("refused a D-Bus call: polkit says no", "method", what, "uid", caller.UID, "action", action)
		return 0, errorf(contract.ErrorNotAuthorized, "%s: not authorized (polkit action %s)", what, action)
	}
	log.Info("allowed a D-Bus call by polkit", "method", what, "uid", caller.UID, "action", action)
	return caller.UID, nil
}

// polkitCheck asks polkit whether the bus client sender may do action.
func polkitCheck(ctx context.Context, conn *dbus.Conn, sender, action string, interactive bool) (bool, error) {
	subject := struct {
		Kind    string
		Details map[string]dbus.Variant
	}{"system-bus-name", map[string]dbus.Variant{"name": dbus.MakeVariant(sender)}}
	var flags uint32
	if interactive {
		flags = 1 // AllowUserInteraction
	}
	var res struct {
		IsAuthorized, IsChallenge bool
		Details                   map[string]string
	}
	obj := conn.Object("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority")
	err := obj.CallWithContext(ctx, "org.freedesktop.PolicyKit1.Authority.CheckAuthorization", 0,
		subject, action, map[string]string{}, flags, "").Store(&res.IsAuthorized, &res.IsChallenge, &res.Details)
	var de dbus.Error
	if errors.As(err, &de) && (de.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
		return false, errors.New("polkit is not running")
	}
	if err != nil {
		return false, err
	}
	return res.IsAuthorized, nil
}
