package api

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/disk"
)

// The human forms, shared by the socket's text replies and diskctl so a
// person sees the same thing either way. Every value from outside goes
// through Escape (cell, escapeJoin) on its way out.

// WriteDisks prints the disk table. It lays the columns out as
// text/tabwriter does (padding 2; tests hold the two equal), without its
// per-cell work: the table of 100,000 disks is what a person waits for.
func WriteDisks(w io.Writer, ds []disk.Disk) {
	const ncol = 7
	cells := make([]string, 0, (len(ds)+1)*ncol)
	cells = append(cells, "HOST", "DEVICE", "LABEL", "UUID", "TYPE", "SIZE", "MOUNTPOINTS")
	for i := range ds {
		d := &ds[i]
		mounts := strings.Join(d.Mounts, ",")
		if !d.Present {
			mounts = "(gone since " + d.LastSeen.Local().Format(time.DateTime) + ")"
		}
		cells = append(cells, cell(d.Host), cell(d.Device), cell(d.Label), cell(d.UUID), cell(d.Type),
			HumanSize(d.Size), cell(mounts))
	}
	writeColumns(w, cells, ncol)
}

// writeColumns writes cells, ncol to a line, as text/tabwriter with
// padding 2 and flags 0 writes them when every line has ncol cells
// separated by tabs: each column but the last padded with spaces to its
// widest cell (in runes) plus 2. Cells must hold no tab, newline, form
// feed, vertical tab or 0xff byte (Escape sees to that).
func writeColumns(w io.Writer, cells []string, ncol int) {
	widths := make([]int, ncol-1)
	for i, c := range cells {
		if col := i % ncol; col < ncol-1 {
			widths[col] = max(widths[col], utf8.RuneCountInString(c)+2)
		}
	}
	var spaces [256]byte
	for i := range spaces {
		spaces[i] = ' '
	}
	buf := make([]byte, 0, 64<<10)
	for i, c := range cells {
		buf = append(buf, c...)
		if col := i % ncol; col < ncol-1 {
			for pad := widths[col] - utf8.RuneCountInString(c); pad > 0; pad -= len(spaces) {
				buf = append(buf, spaces[:min(pad, len(spaces))]...)
			}
		} else {
			buf = append(buf, '\n')
			if len(buf) > 60<<10 {
				w.Write(buf)
				buf = buf[:0]
			}
		}
	}
	w.Write(buf)
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
			fmt.Fprintf(w, "%s is on %s as %s%s%s\n", Escape(q), Escape(d.Host), Escape(d.Device), at, notUnique(&d))
		} else {
			fmt.Fprintf(w, "%s was last seen on %s as %s at %s (not present)%s\n",
				Escape(q), Escape(d.Host), Escape(d.Device), d.LastSeen.Local().Format(time.RFC3339), notUnique(&d))
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
		fmt.Fprintf(w, "%s: not known on this network\n", Escape(q))
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
		fmt.Fprintf(w, "%s (%s), %s%s\n", Escape(name), Escape(d.ID), state, notUnique(d))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  HOST\tDEVICE\tFIRST SEEN\tLAST SEEN")
		for j, s := range h.Sightings {
			last := s.LastSeen.Local().Format(time.DateTime)
			if j == 0 && d.Present {
				last = "now"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", cell(s.Host), cell(s.Device),
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
	fmt.Fprintln(tw, "NAME\tNODE\tSTATE\tLAST HEARD\tDISKS\tREACH\tADDRESSES")
	for _, n := range ns {
		state := "offline"
		switch {
		case n.Local:
			state = "local"
		case n.Online:
			state = "online"
		}
		if n.Reach.Legacy() {
			state += " (legacy)"
		}
		reach := n.Reach.String()
		if n.Local {
			reach = "-"
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
	if line := counterLine(s.StoreCounters); line != "" {
		fmt.Fprintf(w, "table counters: %s\n", line)
	}
	if n := s.Network; n != nil {
		auth := "authenticated (shared key)"
		if !n.Authenticated {
			auth = "UNAUTHENTICATED: any host on the network can send announcements (set --key-file)"
		}
		fmt.Fprintf(w, "network: %s; groups %s; interfaces %s\n", auth,
			Escape(strings.Join(n.Groups, " ")), cell(strings.Join(n.Interfaces, " ")))
		if line := counterLine(n.Counters); line != "" {
			fmt.Fprintf(w, "network counters: %s\n", line)
		}
	}
	if g := s.Gossip; g != nil {
		auth := "keyed (AES-GCM from the key file)"
		if !g.Keyed {
			auth = "UNAUTHENTICATED (--gossip-insecure)"
		}
		fmt.Fprintf(w, "gossip: %s; %d members, %d suspect; health %d; profile %s; advertise %s; join %s\n",
			auth, g.Members, g.Suspect, g.Health, Escape(g.Profile), Escape(g.Advertise), cell(strings.Join(g.Join, " ")))
		if line := counterLine(g.Counters); line != "" {
			fmt.Fprintf(w, "gossip counters: %s\n", line)
		}
	}
	if l := s.Legacy; l != nil {
		fmt.Fprintf(w, "legacy bridge: UNAUTHENTICATED: any host on the network can announce disks as a legacy peer; group %s; interfaces %s; legacy peers %d online of %d\n",
			l.Group, dash(strings.Join(l.Interfaces, " ")), l.PeersOnline, l.Peers)
		writeCounters(w, "legacy counters", l.Counters)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "problem: %s\n", Escape(p))
	}
}

// writeCounters prints the non-zero counters on one line.
func writeCounters(w io.Writer, title string, m map[string]uint64) {
	if line := counterLine(m); line != "" {
		fmt.Fprintf(w, "%s: %s\n", title, line)
	}
}

// counterLine is "name=value ..." for the non-zero counters, by name.
func counterLine(m map[string]uint64) string {
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
		return strconv.FormatUint(b, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	prec := 1
	if v >= 10 || v == float64(int(v)) {
		prec = 0
	}
	return string(append(strconv.AppendFloat(make([]byte, 0, 8), v, 'f', prec, 64), "KMGTPE"[exp]))
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
