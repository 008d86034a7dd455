package api

import (
	"encoding/json"

	"github.com/diskd/diskd/pkg/disk"
)

// The socket protocol. A session starts with one greeting line. Each line
// the client sends is one request:
//
//   - A line starting with "{" is a JSON Request; the reply is exactly one
//     line holding a JSON Response (JSON never contains a raw newline, so a
//     line is a frame). "watch" replies with one Response line saying ok and
//     then streams WatchEvent lines until the client leaves.
//   - Any other line is a command for a person ("list", "where LABEL", ...);
//     the reply is text for a person, ending with a blank line.
//
// Unknown commands get an error reply and the session goes on. Lines longer
// than MaxLineBytes, and sessions idle longer than the server's idle
// timeout, close only that session.

// MaxLineBytes bounds one request line.
const MaxLineBytes = 4096

// Greeting starts every session: "diskd VERSION on NAME; type help".
const GreetingPrefix = "diskd "

// Request is the JSON form of a command.
type Request struct {
	Cmd  string `json:"cmd"`
	Arg  string `json:"arg,omitempty"`  // where, history, mount, unmount: the label or UUID
	Host string `json:"host,omitempty"` // list: only this host (node name or ID)
	// list: only disks attached now; only disks whose label matches a
	// glob (see ListFilter).
	Present bool   `json:"present,omitempty"`
	Label   string `json:"label,omitempty"`
	RW      bool   `json:"rw,omitempty"`    // mount: read-write (the owner must allow it)
	Force   bool   `json:"force,omitempty"` // unmount: a mount diskd did not make (root on the owner only)
}

// AppendJSON appends r as encoding/json encodes it (a test holds the two
// equal), without its reflection: a diskctl that sends one request and
// exits would spend a tenth of its run setting that up.
func (r Request) AppendJSON(b []byte) []byte {
	b = append(b, `{"cmd":`...)
	b = disk.AppendJSONString(b, r.Cmd)
	for _, f := range [...]struct{ key, v string }{{`,"arg":`, r.Arg}, {`,"host":`, r.Host}} {
		if f.v != "" {
			b = disk.AppendJSONString(append(b, f.key...), f.v)
		}
	}
	if r.Present {
		b = append(b, `,"present":true`...)
	}
	if r.Label != "" {
		b = disk.AppendJSONString(append(b, `,"label":`...), r.Label)
	}
	if r.RW {
		b = append(b, `,"rw":true`...)
	}
	if r.Force {
		b = append(b, `,"force":true`...)
	}
	return append(b, '}')
}

// MountResult says what mount or unmount did, and where.
type MountResult struct {
	Disk   string      `json:"disk"` // as asked: the label or UUID
	Host   string      `json:"host"`
	NodeID disk.NodeID `json:"node_id"`
	Device string      `json:"device"`
	Path   string      `json:"path"` // the mount point made, or removed
	RW     bool        `json:"rw"`
}

// Response is the reply to a Request. Exactly one of Error and Result is set.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Commands lists the commands with a line of help each, in help order.
var Commands = []struct{ Name, Args, Help string }{
	{"help", "", "this list"},
	{"list", "[--present] [--label GLOB] [HOST]", "every disk known on the network (or on HOST), present or remembered; --present: attached now; --label: labels matching GLOB"},
	{"where", "LABEL|UUID", "which machine has that disk now, or where it was last seen"},
	{"history", "LABEL|UUID", "where and when that disk was seen, newest first"},
	{"peers", "", "the machines running diskd, online or not"},
	{"localhost", "", "this machine's node name, ID and addresses"},
	{"status", "", "version, uptime, last scan, network and errors"},
	{"refresh", "", "rescan local disks now (coalesced; root and the admin group)"},
	{"announce", "", "send our inventory to the peers soon (paced; root and the admin group)"},
	{"ping", "", "ask every peer to answer; counts answers within a second (root and the admin group)"},
	{"mount", "[--rw] LABEL|UUID", "have the disk's machine mount it (its --mount-allow rules decide; root and the admin group)"},
	{"unmount", "[--force] LABEL|UUID", "have the disk's machine unmount what diskd mounted (root and the admin group)"},
	{"watch", "", "stream changes until the client leaves"},
	{"quit", "", "end the session"},
}
