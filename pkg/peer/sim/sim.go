// Package sim runs many peer.Machines in one process on a simulated
// multicast link and a simulated clock: the peer protocol at a scale no
// test host holds (1000 nodes), fast and reproducible. The link delivers
// every datagram to every other running node after a random latency, with
// optional loss; the clock is a discrete event queue whose time jumps to
// the next delivery or wake-up. Datagrams are the real wire encoding,
// authenticated with a key, and each receiver checks and decodes its copy,
// so sizes and CPU are honest. What a node learns goes to a light table
// (node -> instance, generation, online), not a store.
//
// One IPv4 path per node: a daemon with both families sends each datagram
// twice, so real per-node traffic is up to twice the figures here.
package sim

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/wire"
)

// Options shape a simulated network.
type Options struct {
	N                 int           // nodes
	Disks             int           // local disks per node
	LatencyMin        time.Duration // one-way, uniform in [LatencyMin, LatencyMax]
	LatencyMax        time.Duration
	Loss              float64 // probability a receiver misses a datagram
	HeartbeatInterval time.Duration
	Seed              uint64
	Keys              *wire.Keyring // nil: an unauthenticated network
}

// Epoch is the simulated time at which a network is created.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Net is a simulated network of nodes. Not safe for concurrent use.
type Net struct {
	opt   Options
	now   time.Time
	q     events
	seq   uint64
	rand  *rand.Rand
	dec   *wire.Decoder
	Nodes []*Node
	index map[disk.NodeID]int
}

// Node is one simulated daemon.
type Node struct {
	net     *Net
	i       int
	ID      wire.NodeID
	DiskID  disk.NodeID
	Addr    netip.Addr
	M       *peer.Machine
	Up      bool
	gen     uint64
	wake    time.Time // the wake-up queued for the machine
	table   []entry   // by node index
	Traffic Traffic
}

// Traffic counts one node's datagrams.
type Traffic struct {
	SentDatagrams, SentBytes, ReceivedDatagrams, ReceivedBytes uint64
	// SentByType and SentBytesByType count what was sent by wire type
	// (header byte 5).
	SentByType, SentBytesByType [16]uint64
}

type entry struct {
	instance, gen uint64
	online        bool
}

// New creates a network of opt.N nodes, none started.
func New(opt Options) *Net {
	if opt.LatencyMax < opt.LatencyMin {
		opt.LatencyMax = opt.LatencyMin
	}
	n := &Net{opt: opt, now: Epoch, rand: rand.New(rand.NewPCG(opt.Seed, 1)), dec: wire.NewDecoder(opt.Keys),
		index: make(map[disk.NodeID]int, opt.N)}
	for i := range opt.N {
		var id wire.NodeID
		id[0], id[1], id[2] = 0xd1, byte(i>>8), byte(i)
		for k := 3; k < len(id); k++ {
			id[k] = byte(n.rand.Uint32())
		}
		nd := &Node{net: n, i: i, ID: id, DiskID: id.Domain(),
			Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), table: make([]entry, opt.N)}
		n.index[nd.DiskID] = i
		n.Nodes = append(n.Nodes, nd)
	}
	return n
}

// Total sums the traffic of every node.
func (n *Net) Total() Traffic {
	var t Traffic
	for _, nd := range n.Nodes {
		t.SentDatagrams += nd.Traffic.SentDatagrams
		t.SentBytes += nd.Traffic.SentBytes
		t.ReceivedDatagrams += nd.Traffic.ReceivedDatagrams
		t.ReceivedBytes += nd.Traffic.ReceivedBytes
		for k := range nd.Traffic.SentByType {
			t.SentByType[k] += nd.Traffic.SentByType[k]
			t.SentBytesByType[k] += nd.Traffic.SentBytesByType[k]
		}
	}
	return t
}

// Now is the simulated time.
func (n *Net) Now() time.Time { return n.now }

// Converged reports whether every running node knows every other running
// node's current generation, online, and holds every stopped node offline.
func (n *Net) Converged() bool {
	up := 0
	for _, nd := range n.Nodes {
		if nd.Up {
			up++
		}
	}
	good := 0
	for _, nd := range n.Nodes {
		if !nd.Up {
			continue
		}
		for j, e := range nd.table {
			o := n.Nodes[j]
			if j == nd.i {
				continue
			}
			if o.Up && e.online && e.instance == o.M.Instance() && e.gen == o.gen || !o.Up && !e.online {
				good++
			}
		}
	}
	return good == up*(up-1)+up*(len(n.Nodes)-up)
}

// Knows reports whether node i's table holds node j online at its
// current instance and generation.
func (n *Net) Knows(i, j int) bool {
	e, o := n.Nodes[i].table[j], n.Nodes[j]
	return e.online && o.M != nil && e.instance == o.M.Instance() && e.gen == o.gen
}

// Online reports whether node i's table holds node j online.
func (n *Net) Online(i, j int) bool { return n.Nodes[i].table[j].online }

// Start starts node i now with its disks at generation gen (a new
// instance if it ran before).
func (n *Net) Start(i int) {
	nd := n.Nodes[i]
	n.seq++
	inst := wire.NewInstance(n.now) + n.seq // distinct per node started in the same instant
	nd.M = peer.NewMachine(peer.MachineConfig{
		Self: nd.ID, Name: fmt.Sprintf("sim%d", i), Instance: inst, Keys: n.opt.Keys,
		HeartbeatInterval: n.opt.HeartbeatInterval,
		Rand:              rand.New(rand.NewPCG(n.opt.Seed, uint64(i)<<32|n.seq)),
	}, (*effects)(nd))
	clear(nd.table)
	nd.Up, nd.wake = true, time.Time{}
	nd.gen++
	nd.M.SetLocal(n.now, nd.gen, disks(i, n.opt.Disks, nd.gen))
	nd.M.Start(n.now)
	nd.schedule()
}

// StartAt starts node i at simulated time t (as Start).
func (n *Net) StartAt(i int, t time.Time) { n.push(event{at: t, kind: evStart, node: i}) }

// Change gives running node i a new generation of its inventory.
func (n *Net) Change(i int) {
	nd := n.Nodes[i]
	nd.gen++
	nd.M.SetLocal(n.now, nd.gen, disks(i, n.opt.Disks, nd.gen))
	nd.M.LocalChanged(n.now)
	nd.schedule()
}

// Kill stops node i without a word (a power cut, a SIGKILL).
func (n *Net) Kill(i int) { n.Nodes[i].Up = false }

// Stop stops node i cleanly: its goodbye goes out three times, 20 ms
// apart, as the driver sends it.
func (n *Net) Stop(i int) {
	nd := n.Nodes[i]
	b := nd.M.Goodbye()
	nd.Up = false
	for k := range 3 {
		n.push(event{at: n.now.Add(time.Duration(k) * 20 * time.Millisecond), kind: evSend, node: i, dg: b})
	}
}

func disks(i, k int, gen uint64) []disk.Disk {
	ds := make([]disk.Disk, k)
	for d := range ds {
		ds[d] = disk.Disk{Name: fmt.Sprintf("sd%c", 'a'+d), Device: fmt.Sprintf("/dev/sd%c", 'a'+d),
			MajMin: fmt.Sprintf("8:%d", d*16), UUID: fmt.Sprintf("%08x-%04x-4000-8000-%012x", i, d, gen),
			Label: fmt.Sprintf("node%d_%d", i, d), Type: "ext4", Usage: "filesystem", Size: 1 << 40}
	}
	return ds
}

// Run processes events until simulated time t (the clock then reads t).
func (n *Net) Run(t time.Time) {
	for len(n.q) > 0 && !n.q[0].at.After(t) {
		n.step(heap.Pop(&n.q).(event))
	}
	n.now = t
}

// RunUntil processes events until cond holds (checked every check of
// simulated time) or limit passes; it reports whether cond held.
func (n *Net) RunUntil(limit time.Time, check time.Duration, cond func() bool) bool {
	for !cond() {
		if !n.now.Before(limit) {
			return false
		}
		n.Run(n.now.Add(check))
	}
	return true
}

const (
	evWake = iota
	evSend
	evDeliver
	evStart
)

type event struct {
	at   time.Time
	seq  uint64 // FIFO among events at the same time
	kind int
	node int
	dg   []byte
}

func (n *Net) push(e event) {
	n.seq++
	e.seq = n.seq
	heap.Push(&n.q, e)
}

func (n *Net) step(e event) {
	n.now = e.at
	nd := n.Nodes[e.node]
	switch e.kind {
	case evWake:
		if !nd.Up || !e.at.Equal(nd.wake) {
			return // stale: the node was rescheduled, or is down
		}
		nd.wake = time.Time{}
		nd.M.Tick(n.now)
		nd.schedule()
	case evSend:
		nd.Traffic.SentDatagrams++
		nd.Traffic.SentBytes += uint64(len(e.dg))
		nd.Traffic.SentByType[e.dg[5]&15]++
		nd.Traffic.SentBytesByType[e.dg[5]&15] += uint64(len(e.dg))
		lat := n.opt.LatencyMin
		if d := n.opt.LatencyMax - n.opt.LatencyMin; d > 0 {
			lat += time.Duration(n.rand.Int64N(int64(d)))
		}
		n.push(event{at: n.now.Add(lat), kind: evDeliver, node: e.node, dg: e.dg})
	case evStart:
		n.Start(e.node)
	case evDeliver:
		for _, r := range n.Nodes {
			if r == nd || !r.Up || n.opt.Loss > 0 && n.rand.Float64() < n.opt.Loss {
				continue
			}
			r.receive(e.dg, nd.Addr)
		}
	}
}

// receive checks and decodes a datagram as the driver's reader does, and
// hands it to the machine.
func (nd *Node) receive(b []byte, src netip.Addr) {
	nd.Traffic.ReceivedDatagrams++
	nd.Traffic.ReceivedBytes += uint64(len(b))
	p, err := nd.net.dec.Decode(b)
	if err != nil {
		panic(fmt.Sprintf("sim: node %d cannot decode a datagram: %v", nd.i, err))
	}
	nd.M.Receive(nd.net.now, p, src)
	nd.schedule()
}

// schedule queues the machine's next wake-up if it moved earlier or the
// queued one passed.
func (nd *Node) schedule() {
	w := nd.M.NextWake()
	if w.IsZero() || !nd.wake.IsZero() && !w.Before(nd.wake) {
		return
	}
	if w.Before(nd.net.now) {
		w = nd.net.now
	}
	nd.wake = w
	nd.net.push(event{at: w, kind: evWake, node: nd.i})
}

// effects is a Node as the machine's peer.Effects.
type effects Node

func (f *effects) Send(dgs [][]byte) {
	nd := (*Node)(f)
	for _, b := range dgs {
		// Sent in order, at once: a burst leaves as fast as the link takes it.
		nd.net.push(event{at: nd.net.now, kind: evSend, node: nd.i, dg: b})
	}
}

func (f *effects) set(id disk.NodeID, fn func(*entry)) {
	if j, ok := f.net.index[id]; ok {
		fn(&f.table[j])
	}
}

func (f *effects) PeerSeen(n disk.Node) { f.set(n.ID, func(e *entry) { e.online = true }) }
func (f *effects) PeerInventory(n disk.Node, instance, gen uint64, _ []disk.Disk) {
	f.set(n.ID, func(e *entry) { *e = entry{instance: instance, gen: gen, online: true} })
}
func (f *effects) PeerOffline(id disk.NodeID)        { f.set(id, func(e *entry) { e.online = false }) }
func (f *effects) PeerReach(disk.NodeID, disk.Reach) {}
func (f *effects) Act(*peer.Action) bool             { return false }
func (f *effects) Replied(wire.Reply)                {}

// events is a min-heap of events by time, then by order queued.
type events []event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
