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
// person sees the same thing either way.

// WriteDisks prints the disk table.
func WriteDisks(w io.Writer, ds []disk.Disk) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tDEVICE\tLABEL\tUUID\tTYPE\tSIZE\tMOUNTPOINTS")
	for _, d := range ds {
		mounts := strings.Join(d.Mounts, ",")
		if !d.Present {
			mounts = "(gone since " + d.LastSeen.Local().Format(time.DateTime) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(d.Host), d.Device, dash(printable(d.Label)),
			dash(d.UUID), dash(d.Type), HumanSize(d.Size), dash(mounts))
	}
	tw.Flush()
}

// WriteWhere answers "where Q" for a person.
func WriteWhere(w io.Writer, q string, ds []disk.Disk) {
	if len(ds) == 0 {
		fmt.Fprintf(w, "%s: not known on this network\n", printable(q))
		return
	}
	for _, d := range ds {
		if d.Present {
			at := ""
			if len(d.Mounts) > 0 {
				at = ", mounted on " + strings.Join(d.Mounts, ", ")
			}
			fmt.Fprintf(w, "%s is on %s as %s%s%s\n", printable(q), d.Host, d.Device, at, notUnique(&d))
		} else {
			fmt.Fprintf(w, "%s was last seen on %s as %s at %s (not present)%s\n",
				printable(q), d.Host, d.Device, d.LastSeen.Local().Format(time.RFC3339), notUnique(&d))
		}
	}
}

// notUnique is where's note for a disk whose identity is carried by
// another present device too (a cloned filesystem).
func notUnique(d *disk.Disk) string {
	if !d.NotUnique {
		return ""
	}
	what := "UUID"
	if strings.HasPrefix(d.ID, disk.IdentityPartUUID) {
		what = "partition UUID"
	}
	return "; its " + what + " is not unique: another device carries it too"
}

// WriteHistory answers "history Q" for a person: each disk Q names, then
// where and when it was seen, newest first.
func WriteHistory(w io.Writer, q string, hs []disk.History) {
	if len(hs) == 0 {
		fmt.Fprintf(w, "%s: not known on this network\n", printable(q))
		return
	}
	for i, h := range hs {
		d := &h.Disk
		if i > 0 {
			fmt.Fprintln(w)
		}
		name := d.Label
		if name == "" {
			name = q
		}
		state := "not present"
		if d.Present {
			state = "present"
		}
		fmt.Fprintf(w, "%s (%s), %s%s\n", printable(name), printable(d.ID), state, notUnique(d))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  HOST\tDEVICE\tFIRST SEEN\tLAST SEEN")
		for j, s := range h.Sightings {
			last := s.LastSeen.Local().Format(time.DateTime)
			if j == 0 && d.Present {
				last = "now"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", dash(printable(s.Host)), dash(printable(s.Device)),
				s.FirstSeen.Local().Format(time.DateTime), last)
		}
		tw.Flush()
	}
	if len(hs) >= disk.MaxHistoryDisks {
		fmt.Fprintf(w, "\n(only the first %d disks that match are shown; a UUID names one disk)\n", disk.MaxHistoryDisks)
	}
}

// WriteNodes prints the peer table.
func WriteNodes(w io.Writer, ns []disk.Node) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNODE\tSTATE\tLAST HEARD\tDISKS\tADDRESSES")
	for _, n := range ns {
		state := "offline"
		switch {
		case n.Local:
			state = "local"
		case n.Online:
			state = "online"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", dash(n.Name), n.ID, state,
			n.LastSeen.Local().Format(time.DateTime), n.Disks, dash(strings.Join(n.Addresses, ",")))
	}
	tw.Flush()
}

// WriteStatus prints the status report.
func WriteStatus(w io.Writer, s Status) {
	fmt.Fprintf(w, "diskd %s on %s (node %s), up %s\n", s.Version, s.NodeName, s.NodeID,
		(time.Duration(s.UptimeSec) * time.Second).String())
	fmt.Fprintf(w, "state: %s   socket: %s   dbus: %s\n", s.StateDir, s.Socket, s.DBus)
	sc := s.Scan
	last := "never"
	if !sc.LastScan.IsZero() {
		last = fmt.Sprintf("%s (%.0f ms)", sc.LastScan.Local().Format(time.DateTime), sc.LastDuration*1000)
	}
	fmt.Fprintf(w, "last scan: %s; %d full scans, %d device probes, %d uevents, %d mount updates\n",
		last, sc.FullScans, sc.DeviceProbes, sc.Uevents, sc.MountUpdates)
	if sc.LastError != "" {
		fmt.Fprintf(w, "scan error: %s (at %s)\n", sc.LastError, sc.LastErrorTime.Local().Format(time.DateTime))
	}
	c := s.Counts
	fmt.Fprintf(w, "disks: %d present here, %d present on the network, %d known; nodes: %d online of %d\n",
		c.LocalPresent, c.DisksPresent, c.Disks, c.NodesOnline, c.Nodes)
	if line := counterLine(s.StoreCounters); line != "" {
		fmt.Fprintf(w, "table counters: %s\n", line)
	}
	if n := s.Network; n != nil {
		auth := "authenticated (shared key)"
		if !n.Authenticated {
			auth = "UNAUTHENTICATED: any host on the network can send announcements (set --key-file)"
		}
		fmt.Fprintf(w, "network: %s; groups %s; interfaces %s\n", auth,
			strings.Join(n.Groups, " "), dash(strings.Join(n.Interfaces, " ")))
		if line := counterLine(n.Counters); line != "" {
			fmt.Fprintf(w, "network counters: %s\n", line)
		}
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
}

// counterLine is "name=value ..." for the non-zero counters, by name.
func counterLine(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, fmt.Sprintf("%s=%d", k, v))
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
		fmt.Fprintf(w, "%s %s %s %s %s label=%q uuid=%s %s\n", ts, ev.Kind, d.Host, d.Device, state,
			d.Label, dash(d.UUID), strings.Join(d.Mounts, ","))
	case ev.Node != nil:
		state := "offline"
		if ev.Node.Online {
			state = "online"
		}
		fmt.Fprintf(w, "%s %s %s %s\n", ts, ev.Kind, ev.Node.Name, state)
	}
}

// WriteLocalhost prints `localhost`.
func WriteLocalhost(w io.Writer, l Localhost) {
	fmt.Fprintf(w, "%s (node %s) %s\n", l.Name, l.NodeID, strings.Join(l.Addresses, " "))
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

// printable keeps table cells on one line whatever bytes a label holds.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
