package api

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// The human forms, shared by the socket's text replies and diskctl so a
// person sees the same thing either way. Every value from outside goes
// through Escape (cell, escapeJoin) on its way out.

// WriteDisks prints the disk table.
func WriteDisks(w io.Writer, ds []disk.Disk) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tDEVICE\tLABEL\tUUID\tTYPE\tSIZE\tMOUNTPOINTS")
	for _, d := range ds {
		mounts := strings.Join(d.Mounts, ",")
		if !d.Present {
			mounts = "(gone since " + d.LastSeen.Local().Format(time.DateTime) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(d.Host), cell(d.Device), cell(d.Label),
			cell(d.UUID), cell(d.Type), HumanSize(d.Size), cell(mounts))
	}
	tw.Flush()
}

// WriteWhere answers "where Q" for a person.
func WriteWhere(w io.Writer, q string, ds []disk.Disk) {
	if len(ds) == 0 {
		fmt.Fprintf(w, "%s: not known on this network\n", Escape(q))
		return
	}
	for _, d := range ds {
		if d.Present {
			at := ""
			if len(d.Mounts) > 0 {
				at = ", mounted on " + Escape(strings.Join(d.Mounts, ", "))
			}
			fmt.Fprintf(w, "%s is on %s as %s%s\n", Escape(q), Escape(d.Host), Escape(d.Device), at)
		} else {
			fmt.Fprintf(w, "%s was last seen on %s as %s at %s (not present)\n",
				Escape(q), Escape(d.Host), Escape(d.Device), d.LastSeen.Local().Format(time.RFC3339))
		}
	}
}

// WriteNodes prints the peer table.
func WriteNodes(w io.Writer, ns []disk.Node) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNODE\tSTATE\tLAST HEARD\tDISKS\tREACH\tADDRESSES")
	for _, n := range ns {
		state := "offline"
		switch {
		case n.Local:
			state = "local"
		case n.Online:
			state = "online"
		}
		reach := n.Reach
		switch {
		case n.Local:
			reach = "-"
		case reach == "":
			reach = "multicast"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", cell(n.Name), cell(string(n.ID)), state,
			n.LastSeen.Local().Format(time.DateTime), n.Disks, cell(reach), cell(strings.Join(n.Addresses, ",")))
	}
	tw.Flush()
}

// WriteStatus prints the status report.
func WriteStatus(w io.Writer, s Status) {
	fmt.Fprintf(w, "diskd %s on %s (node %s), up %s\n", Escape(s.Version), Escape(s.NodeName), Escape(string(s.NodeID)),
		(time.Duration(s.UptimeSec) * time.Second).String())
	fmt.Fprintf(w, "state: %s   socket: %s   dbus: %s\n", Escape(s.StateDir), Escape(s.Socket), Escape(s.DBus))
	sc := s.Scan
	last := "never"
	if !sc.LastScan.IsZero() {
		last = fmt.Sprintf("%s (%.0f ms)", sc.LastScan.Local().Format(time.DateTime), sc.LastDuration*1000)
	}
	fmt.Fprintf(w, "last scan: %s; %d full scans, %d device probes, %d uevents, %d mount updates\n",
		last, sc.FullScans, sc.DeviceProbes, sc.Uevents, sc.MountUpdates)
	if sc.LastError != "" {
		fmt.Fprintf(w, "scan error: %s (at %s)\n", Escape(sc.LastError), sc.LastErrorTime.Local().Format(time.DateTime))
	}
	c := s.Counts
	fmt.Fprintf(w, "disks: %d present here, %d present on the network, %d known; nodes: %d online of %d\n",
		c.LocalPresent, c.DisksPresent, c.Disks, c.NodesOnline, c.Nodes)
	if n := s.Network; n != nil {
		auth := "authenticated (shared key)"
		if !n.Authenticated {
			auth = "UNAUTHENTICATED: any host on the network can send announcements (set --key-file)"
		}
		fmt.Fprintf(w, "network: %s; groups %s; interfaces %s\n", auth,
			Escape(strings.Join(n.Groups, " ")), cell(strings.Join(n.Interfaces, " ")))
		if c := nonZero(n.Counters); c != "" {
			fmt.Fprintf(w, "network counters: %s\n", c)
		}
	}
	if g := s.Gossip; g != nil {
		auth := "keyed (AES-GCM from the key file)"
		if !g.Keyed {
			auth = "UNAUTHENTICATED (--gossip-insecure)"
		}
		fmt.Fprintf(w, "gossip: %s; %d members, %d suspect; health %d; profile %s; advertise %s; join %s\n",
			auth, g.Members, g.Suspect, g.Health, Escape(g.Profile), Escape(g.Advertise), cell(strings.Join(g.Join, " ")))
		if c := nonZero(g.Counters); c != "" {
			fmt.Fprintf(w, "gossip counters: %s\n", c)
		}
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "problem: %s\n", Escape(p))
	}
}

// nonZero lists the counters that are not zero as "name=value", sorted.
func nonZero(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, fmt.Sprintf("%s=%d", Escape(k), v))
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, " ")
}

// WriteEvent prints one watch event as a line.
func WriteEvent(w io.Writer, ev WatchEvent) {
	ts := ev.Time.Local().Format("15:04:05.000")
	switch {
	case ev.Disk != nil:
		d := ev.Disk
		state := "present"
		if !d.Present {
			state = "gone"
		}
		fmt.Fprintf(w, "%s %s %s %s %s label=\"%s\" uuid=%s %s\n", ts, Escape(ev.Kind), Escape(d.Host), Escape(d.Device), state,
			Escape(d.Label), cell(d.UUID), Escape(strings.Join(d.Mounts, ",")))
	case ev.Node != nil:
		state := "offline"
		if ev.Node.Online {
			state = "online"
		}
		fmt.Fprintf(w, "%s %s %s %s\n", ts, Escape(ev.Kind), Escape(ev.Node.Name), state)
	}
}

// WriteLocalhost prints `localhost`.
func WriteLocalhost(w io.Writer, l Localhost) {
	fmt.Fprintf(w, "%s (node %s) %s\n", Escape(l.Name), Escape(string(l.NodeID)), Escape(strings.Join(l.Addresses, " ")))
}

// HumanSize formats bytes in binary units, as lsblk does.
func HumanSize(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	if v >= 10 || v == float64(int(v)) {
		return fmt.Sprintf("%.0f%c", v, "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.1f%c", v, "KMGTPE"[exp])
}

// NewEvent translates a store event for the wire.
func NewEvent(ev disk.Event) WatchEvent {
	return WatchEvent{Kind: ev.Kind.String(), Time: ev.Time, Disk: ev.Disk, Node: ev.Node}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cell is one table cell: escaped (Escape), "-" when empty.
func cell(s string) string { return dash(Escape(s)) }
