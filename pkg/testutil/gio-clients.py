#!/usr/bin/python3
"""Gio DBusObjectManagerClients on org.diskd.Diskd1, as GNOME creates them.

Usage: gio-clients.py BUS_ADDRESS (testutil.StartGioClients runs it)

Commands, one per line on stdin, each answered with one line on stdout:
  new   connect to the bus and create one more client (each on its own
        connection, as each application has its own); answers "ok N".
  dump  answers one JSON object: {"clients": [STATE, ...], "before": STATE,
        "after": STATE}, where each client's STATE is what its proxies hold
        (object path -> interface -> property -> GVariant text), and
        "before" and "after" are fresh GetManagedObjects replies in the
        same form, taken before and after the clients are read. Before the
        clients are read, each makes a round trip to the daemon, so every
        signal the daemon sent before "before" has been delivered and
        applied.
  quit  exits.

The main loop runs between commands, so signals are applied as they come,
as in an application.
"""
import json
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

NAME = "org.diskd.Diskd1"
ROOT = "/org/diskd/Diskd1"
FLAGS = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION

address = sys.argv[1]
clients = []  # (connection, manager)
ctx = GLib.MainContext.default()
loop = GLib.MainLoop()


def connect():
    return Gio.DBusConnection.new_for_address_sync(address, FLAGS, None, None)


def pump():
    while ctx.iteration(False):
        pass


def cached(manager):
    out = {}
    for obj in manager.get_objects():
        ifaces = {}
        for proxy in obj.get_interfaces():
            props = {}
            for name in proxy.get_cached_property_names():
                props[name] = proxy.get_cached_property(name).print_(True)
            ifaces[proxy.get_interface_name()] = props
        out[obj.get_object_path()] = ifaces
    return out


def fresh(conn):
    reply = conn.call_sync(NAME, ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                           None, GLib.VariantType("(a{oa{sa{sv}}})"), Gio.DBusCallFlags.NONE, -1, None)
    objs = reply.get_child_value(0)
    out = {}
    for i in range(objs.n_children()):
        entry = objs.get_child_value(i)
        ifaces_v = entry.get_child_value(1)
        ifaces = {}
        for j in range(ifaces_v.n_children()):
            ie = ifaces_v.get_child_value(j)
            props_v = ie.get_child_value(1)
            props = {}
            for k in range(props_v.n_children()):
                pe = props_v.get_child_value(k)
                props[pe.get_child_value(0).get_string()] = pe.get_child_value(1).get_variant().print_(True)
            ifaces[ie.get_child_value(0).get_string()] = props
        out[entry.get_child_value(0).get_string()] = ifaces
    return out


def command(line):
    cmd = line.strip()
    if cmd == "new":
        conn = connect()
        manager = Gio.DBusObjectManagerClient.new_sync(
            conn, Gio.DBusObjectManagerClientFlags.NONE, NAME, ROOT, None, None, None)
        clients.append((conn, manager))
        return "ok %d" % len(clients)
    if cmd == "dump":
        probe = clients[0][0] if clients else connect()
        before = fresh(probe)
        for conn, _ in clients:
            # Ordered after every signal the daemon sent before it.
            conn.call_sync(NAME, ROOT, "org.freedesktop.DBus.Peer", "Ping", None, None,
                           Gio.DBusCallFlags.NONE, -1, None)
        pump()
        states = [cached(m) for _, m in clients]
        after = fresh(probe)
        return json.dumps({"clients": states, "before": before, "after": after})
    if cmd == "quit":
        loop.quit()
        return "bye"
    return "error: unknown command %r" % cmd


def on_stdin(channel, condition):
    # One command at a time: the caller waits for each answer, so no second
    # line can sit unseen in stdin's buffer.
    line = sys.stdin.readline()
    if not line:
        loop.quit()
        return False
    try:
        out = command(line)
    except GLib.Error as e:
        out = "error: " + e.message
    sys.stdout.write(out + "\n")
    sys.stdout.flush()
    return True


GLib.io_add_watch(GLib.IOChannel.unix_new(0), GLib.PRIORITY_DEFAULT,
                  GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR, on_stdin)
loop.run()
