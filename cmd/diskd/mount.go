package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/mounter"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/wire"
)

// remoteTimeout bounds a request to a peer: its repeats, its mount.
const remoteTimeout = 30 * time.Second

// Mount mounts the disk q names on the machine that has it: here through
// the mounter, on a peer by a request over the (keyed) peer network. The
// caller has authorized uid.
func (b *backend) Mount(ctx context.Context, q string, rw bool, uid uint32) (api.MountResult, error) {
	return b.mountAction(ctx, wire.ActionMount, q, rw, false, uid)
}

// Unmount unmounts the disk q names on the machine that has it.
func (b *backend) Unmount(ctx context.Context, q string, force bool, uid uint32) (api.MountResult, error) {
	return b.mountAction(ctx, wire.ActionUnmount, q, false, force, uid)
}

func (b *backend) mountAction(ctx context.Context, act wire.Action, q string, rw, force bool, uid uint32) (api.MountResult, error) {
	d, err := b.onePresent(q)
	if err != nil {
		return api.MountResult{}, err
	}
	res := api.MountResult{Disk: q, Host: d.Host, NodeID: d.Node, Device: d.Device, RW: rw}
	if d.Node == b.store.LocalNode().ID {
		who := fmt.Sprintf("uid %d on this machine", uid)
		if act == wire.ActionMount {
			res.Path, err = b.mounter.Mount(ctx, d, rw, who)
		} else {
			res.Path, err = b.mounter.Unmount(ctx, d, force && uid == 0, who)
		}
		if err != nil {
			return res, fmt.Errorf("%s %s on %s: %w", act, q, d.Host, err)
		}
		return res, nil
	}
	if force {
		return res, fmt.Errorf("unmount --force works only on the disk's own machine (%s), as root", d.Host)
	}
	if b.net == nil {
		return res, fmt.Errorf("%s is on %s, and the peer network is off here", q, d.Host)
	}
	if !b.net.Authenticated() {
		return res, fmt.Errorf("%s %s on %s: the network is unauthenticated; remote mounts need --key-file on both machines", act, q, d.Host)
	}
	if n, ok := b.store.Node(d.Node); !ok || !n.Online {
		return res, fmt.Errorf("%s %s: its machine %s is offline", act, q, d.Host)
	}
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	rep, err := b.net.Request(ctx, d.Node, wire.Request{Action: act, Query: d.Spec(), RW: rw, UID: uid})
	if errors.Is(err, peer.ErrNoAnswer) {
		return res, fmt.Errorf("%s %s on %s: timeout: no answer within %s (is its network keyed with the same key?)", act, q, d.Host, remoteTimeout)
	}
	if err != nil {
		return res, fmt.Errorf("%s %s on %s: %w", act, q, d.Host, err)
	}
	res.Path = rep.Path
	if rep.Status != wire.StatusOK {
		return res, fmt.Errorf("%s %s on %s: %s", act, q, d.Host, rep.Message)
	}
	return res, nil
}

// onePresent returns the one present disk q names, or says why not.
func (b *backend) onePresent(q string) (disk.Disk, error) {
	all := b.store.Where(q)
	var present []disk.Disk
	for _, d := range all {
		if d.Present {
			present = append(present, d)
		}
	}
	switch {
	case len(present) == 1:
		return present[0], nil
	case len(present) > 1:
		var at []string
		for _, d := range present {
			at = append(at, d.Host+" "+d.Device)
		}
		return disk.Disk{}, fmt.Errorf("%d disks answer to %q (%s); name one by its UUID", len(present), q, strings.Join(at, ", "))
	case len(all) > 0:
		return disk.Disk{}, fmt.Errorf("%s: disk not present (last seen on %s at %s)", q, all[0].Host, all[0].LastSeen.Format(time.RFC3339))
	}
	return disk.Disk{}, fmt.Errorf("%s: not known on this network", q)
}

// serveRequest acts on a peer's request for one of our disks.
func (b *backend) serveRequest(ctx context.Context, from disk.Node, r wire.Request) wire.Reply {
	local := b.store.LocalNode().ID
	var mine []disk.Disk
	for _, d := range b.store.Where(r.Query) {
		if d.Node == local && d.Present {
			mine = append(mine, d)
		}
	}
	if len(mine) != 1 {
		msg := "disk not present here"
		if len(mine) > 1 {
			msg = fmt.Sprintf("%d disks here answer to %q", len(mine), r.Query)
		}
		return wire.Reply{Status: wire.StatusNotPresent, Message: msg}
	}
	who := fmt.Sprintf("uid %d on %s (node %s)", r.UID, from.Name, from.ID)
	var path string
	var err error
	if r.Action == wire.ActionMount {
		path, err = b.mounter.Mount(ctx, mine[0], r.RW, who)
	} else {
		path, err = b.mounter.Unmount(ctx, mine[0], false, who)
	}
	rep := wire.Reply{Status: wire.StatusOK, Path: path}
	if err != nil {
		rep.Status, rep.Message = replyStatus(err), err.Error()
		var am *mounter.AlreadyMountedError
		if errors.As(err, &am) {
			rep.Path = am.Path
		}
	}
	return rep
}

func replyStatus(err error) wire.Status {
	var am *mounter.AlreadyMountedError
	switch {
	case errors.As(err, &am):
		return wire.StatusAlreadyMounted
	case errors.Is(err, mounter.ErrNotAllowed), errors.Is(err, mounter.ErrRWNotAllowed), errors.Is(err, mounter.ErrNotFilesystem):
		return wire.StatusNotAllowed
	case errors.Is(err, mounter.ErrNotPresent):
		return wire.StatusNotPresent
	case errors.Is(err, mounter.ErrBusy):
		return wire.StatusBusy
	case errors.Is(err, mounter.ErrNotOurs):
		return wire.StatusNotOurs
	case errors.Is(err, mounter.ErrNotMounted):
		return wire.StatusNotMounted
	}
	return wire.StatusFailed
}
