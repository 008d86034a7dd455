package store

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/disk"
)

// The state file is a bbolt database: one record per node and per row (a
// disk with its history), so saving a change writes that record, not the
// table. Writes are batched: a change marks its record dirty, and
// RunPersist writes all dirty records in one transaction a short delay
// later.
//
// Layout (schema 2):
//
//	meta   "schema" -> "2"
//	nodes  NODEID   -> disk.Node as JSON
//	rows   ROWKEY   -> rowRecord as JSON (the disk, since, past sightings)
//
// Schema 1 (diskd before disk identities) had no meta bucket and a "disks"
// bucket keyed "NODEID/KERNELNAME"; opening such a file migrates it in one
// transaction (see migrateV1), so a crash leaves either layout, whole.
var (
	bucketMeta  = []byte("meta")
	bucketNodes = []byte("nodes")
	bucketRows  = []byte("rows")
	bucketDisks = []byte("disks") // schema 1
	keySchema   = []byte("schema")
)

// Schema is the state file layout this code writes.
const Schema = 2

// ErrNewerSchema is OpenDB's error for a state file written by a newer
// diskd: it is left untouched rather than moved aside.
var ErrNewerSchema = errors.New("state file written by a newer diskd")

// ErrDamaged is in Load's error for a state file whose records cannot be
// read back: OpenStore moves such a file aside.
var ErrDamaged = errors.New("state file damaged")

// rowRecord is one row as stored.
type rowRecord struct {
	Disk disk.Disk `json:"disk"`
	// Since is when the current placement began; omitted when it is the
	// disk's FirstSeen (a disk never moved), which is most of them.
	Since time.Time       `json:"since,omitzero"`
	Past  []disk.Sighting `json:"past,omitempty"`
}

// DB is the open state file.
type DB struct {
	bolt *bolt.DB
	Path string
}

// OpenStore opens the state file at path (OpenDB) and loads it into a
// new store made with opts (Load), which decodes every record once. A file
// whose records do not all read back (ErrDamaged) is moved aside as one
// bbolt cannot open is, and the store starts empty on a new file;
// movedAside names the file moved aside so the caller can report it.
func OpenStore(path string, opts Options) (s *Store, db *DB, movedAside string, err error) {
	db, movedAside, err = OpenDB(path)
	if err != nil {
		return nil, nil, movedAside, err
	}
	s = New(opts)
	if err = s.Load(db); err == nil {
		return s, db, movedAside, nil
	}
	db.Close()
	if !errors.Is(err, ErrDamaged) {
		return nil, nil, movedAside, fmt.Errorf("load state: %w", err)
	}
	// The partly filled store goes with the file.
	if movedAside, err = moveAside(path, err); err != nil {
		return nil, nil, "", err
	}
	if db, err = openDB(path); err != nil {
		return nil, nil, movedAside, err
	}
	return New(opts), db, movedAside, nil
}

// OpenDB opens (creating if needed) the state file at path. A file that is
// not a valid database is renamed to PATH.corrupt-TIMESTAMP and a new one
// created; movedAside names it so the caller can report it. Its records
// are read, and checked, by Load (OpenStore).
func OpenDB(path string) (db *DB, movedAside string, err error) {
	db, err = openDB(path)
	if err == nil {
		return db, "", nil
	}
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, "", fmt.Errorf("state file %s is locked: is another diskd using this state directory?", path)
	}
	if errors.Is(err, ErrNewerSchema) {
		return nil, "", err
	}
	aside, err := moveAside(path, err)
	if err != nil {
		return nil, "", err
	}
	db, err = openDB(path)
	if err != nil {
		return nil, aside, err
	}
	return db, aside, nil
}

// moveAside renames the state file at path, unreadable for cause, to
// PATH.corrupt-TIMESTAMP.
func moveAside(path string, cause error) (string, error) {
	aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("state file %s unreadable (%v) and cannot be moved aside: %w", path, cause, err)
	}
	return aside, nil
}

func openDB(path string) (db *DB, err error) {
	// bbolt panics on some kinds of damage; a damaged file must not be fatal.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("open state file %s: %v", path, r)
		}
	}()
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		if err := checkSchema(tx); err != nil {
			return err
		}
		if tx.Bucket(bucketDisks) != nil {
			if err := migrateV1(tx); err != nil {
				return fmt.Errorf("migrate from schema 1: %w", err)
			}
		}
		for _, name := range [][]byte{bucketMeta, bucketNodes, bucketRows} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(Schema)))
	})
	if err != nil {
		b.Close()
		if errors.Is(err, ErrNewerSchema) {
			return nil, fmt.Errorf("state file %s: %w", path, err)
		}
		return nil, fmt.Errorf("init state file %s: %w", path, err)
	}
	return &DB{bolt: b, Path: path}, nil
}

// checkSchema refuses a layout newer than this code's.
func checkSchema(tx *bolt.Tx) error {
	m := tx.Bucket(bucketMeta)
	if m == nil {
		return nil
	}
	v := m.Get(keySchema)
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return fmt.Errorf("schema version %q is not a number", clipBytes(v))
	}
	if n > Schema {
		return fmt.Errorf("%w (schema %d; this diskd reads up to %d): upgrade diskd or move the file aside", ErrNewerSchema, n, Schema)
	}
	return nil
}

func clipBytes(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// migrateV1 turns schema 1's per-placement records into rows: records
// carrying the same identity become one row whose current placement is
// the most recent record and whose history holds the others, newest
// first. Records of one identity present at once (clones) keep a row
// each, as the store would have made them.
func migrateV1(tx *bolt.Tx) error {
	var old []disk.Disk
	err := tx.Bucket(bucketDisks).ForEach(func(k, v []byte) error {
		var d disk.Disk
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("disk record %q: %w", k, err)
		}
		if d.Name == "" {
			return nil
		}
		old = append(old, d)
		return nil
	})
	if err != nil {
		return err
	}
	rows, err := tx.CreateBucketIfNotExists(bucketRows)
	if err != nil {
		return err
	}
	for key, rec := range rowsFromV1(old, DefaultHistoryPerDisk) {
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := rows.Put([]byte(key), v); err != nil {
			return err
		}
	}
	return tx.DeleteBucket(bucketDisks)
}

// rowsFromV1 groups schema 1 records by identity (pure, for tests).
func rowsFromV1(old []disk.Disk, historyPerDisk int) map[disk.Key]rowRecord {
	byID := map[string][]disk.Disk{}
	for _, d := range old {
		d.ID = disk.Identity(&d)
		d.Mounts = cloneMounts(d.Mounts)
		byID[d.ID] = append(byID[d.ID], d)
	}
	out := make(map[disk.Key]rowRecord, len(byID))
	for id, ds := range byID {
		// Present first, then the most recently seen, then by place.
		slices.SortFunc(ds, func(a, b disk.Disk) int {
			return cmp.Or(-cmpBool(a.Present, b.Present), b.LastSeen.Compare(a.LastSeen),
				cmp.Compare(a.Node, b.Node), cmp.Compare(a.Name, b.Name))
		})
		p := rowRecord{Disk: ds[0]}
		p.Disk.Row = disk.Key(id)
		for _, d := range ds[1:] {
			if d.Present {
				c := rowRecord{Disk: d}
				c.Disk.Row = disk.CloneKey(id, d.Node, d.Name)
				out[c.Disk.Row] = c
				continue
			}
			if d.FirstSeen.Before(p.Disk.FirstSeen) {
				p.Disk.FirstSeen = d.FirstSeen
			}
			if len(p.Past) < historyPerDisk-1 {
				p.Past = append(p.Past, disk.Sighting{Node: d.Node, Host: d.Host, Name: d.Name,
					Device: d.Device, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen})
			}
		}
		if !p.Disk.FirstSeen.Equal(ds[0].FirstSeen) {
			p.Since = ds[0].FirstSeen // its current place is newer than the disk
		}
		out[p.Disk.Row] = p
	}
	return out
}

// eachRecord calls f with every record of bucket name, in key order.
// bbolt panics on some kinds of damage as it reads pages: such a panic
// is returned as ErrDamaged. f's own panics are not recovered (a bug is
// not damage).
func eachRecord(tx *bolt.Tx, name []byte, f func(k, v []byte) error) error {
	var c *bolt.Cursor
	var k, v []byte
	step := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: bucket %s: %v", ErrDamaged, name, r)
			}
		}()
		if c != nil {
			k, v = c.Next()
			return nil
		}
		b := tx.Bucket(name)
		if b == nil {
			return fmt.Errorf("%w: no bucket %s", ErrDamaged, name)
		}
		c = b.Cursor()
		k, v = c.First()
		return nil
	}
	for {
		if err := step(); err != nil || k == nil {
			return err
		}
		if err := f(k, v); err != nil {
			return err
		}
	}
}

// decodeRow decodes a row record into rec as json.Unmarshal does: by
// disk.ParseRecordJSON, whose strings share v, or else by encoding/json,
// whose errors it returns.
func decodeRow(v []byte, rec *rowRecord) error {
	if d, since, past, ok := disk.ParseRecordJSON(v); ok {
		*rec = rowRecord{Disk: d, Since: since, Past: past}
		return nil
	}
	*rec = rowRecord{}
	return json.Unmarshal(v, rec)
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Load fills an empty store from db. Peers start offline (they have not
// been heard since the restart) and their disks not present; local disks
// keep their saved state until the first scan replaces it, so a daemon
// whose blkid fails still answers from its last good inventory. Rows
// beyond the store's bounds (lowered since they were saved) are dropped,
// the longest gone first. A record that cannot be read back is an error
// with ErrDamaged, and the store is then left partly filled (OpenStore
// drops it).
func (s *Store) Load(db *DB) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var arena *loadArena
	err := db.bolt.View(func(tx *bolt.Tx) error {
		drop := db.readDropper(tx)
		defer drop.all() // all of it was read once; it is in memory now
		err := eachRecord(tx, bucketNodes, func(k, v []byte) error {
			var n disk.Node
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("%w: %s: node record %q: %w", ErrDamaged, db.Path, k, err)
			}
			if n.ID == s.opts.Local.ID {
				return nil // the local node's name and addresses come from this start
			}
			n.Local, n.Online, n.Disks = false, false, 0
			s.nodes[n.ID] = newNodeEntry(n)
			return nil
		})
		if err != nil {
			return err
		}
		localAt := make(map[string]*row) // the present local row at each kernel name
		// Each record is decoded once, from a copy in buf, and most of its
		// strings share buf (decodeRow): nothing is allocated for a value
		// the row's encoding copies anyway. What the row keeps as strings
		// (the kernel name, past sightings) is copied out of buf.
		var buf, encBuf []byte
		var rec rowRecord
		arena = newLoadArena()
		return eachRecord(tx, bucketRows, func(k, v []byte) error {
			drop.read()
			buf = append(buf[:0], v...)
			if err := decodeRow(buf, &rec); err != nil {
				return fmt.Errorf("%w: %s: row record %q: %w", ErrDamaged, db.Path, k, err)
			}
			e, ok := s.nodes[rec.Disk.Node]
			if !ok || rec.Disk.Name == "" {
				return nil // its node record is gone: an interrupted eviction
			}
			d := rec.Disk
			r := &row{node: e}
			d.Node = e.node.ID       // one string for all the node's rows
			d.ID = disk.Identity(&d) // derived, whatever the record says
			d.Name = strings.Clone(d.Name)
			d.Row = disk.Key(d.ID) // share the string: most rows are primaries
			if string(k) != d.ID {
				d.Row = disk.Key(k)
			}
			if !e.node.Local {
				d.Present = false
			}
			if max := s.opts.HistoryPerDisk - 1; len(rec.Past) > max {
				rec.Past = rec.Past[:max]
			}
			for i := range rec.Past {
				ownSighting(&rec.Past[i])
			}
			if prev := localAt[d.Name]; d.Present && prev != nil {
				// Two present rows at one place cannot both be true; the
				// first scan decides. Keep the later one present.
				if d.LastSeen.Compare(prev.d.LastSeen) < 0 || d.LastSeen.Equal(prev.d.LastSeen) && d.Row < prev.key() {
					d.Present = false
				} else {
					prev.d.Present = false
					prev.reencode()
					heap.Push(&s.absent, prev)
				}
			}
			encBuf = appendRow(encBuf[:0], &d)
			r.setEncoded(&d, rowJSON{b: arena.keep(e, encBuf)})
			if raw := r.rawDisk(); raw != nil {
				ownDisk(raw)
			}
			r.setKey(d.Row)
			r.d.hidx = -1
			if len(rec.Past) > 0 {
				r.setPast(rec.Past)
			}
			if rec.Since.IsZero() {
				rec.Since = d.FirstSeen
			}
			r.setSince(rec.Since)
			s.rows[r.key()] = r
			if r.key().IsClone() {
				s.clones[r.d.ID] = append(s.clones[r.d.ID], r)
			}
			s.placeLocked(r, e)
			if !r.d.Present {
				heap.Push(&s.absent, r)
			} else if e.node.Local {
				localAt[r.d.Name] = r
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for len(s.rows) > s.opts.MaxDisks && len(s.absent) > 0 {
		s.forgetRowLocked(s.absent[0])
	}
	for id, cs := range s.clones {
		slices.SortFunc(cs, func(a, b *row) int { return cmp.Compare(a.key(), b.key()) })
		s.uniqueQuietLocked(id)
	}
	// Each node's rows packed now (list.go), rather than by the first
	// list: their strings then sit in a few large blocks instead of
	// between the garbage the decoding left. Packing a node frees its
	// chunks of the arena, and a collection every packGCEvery bytes of
	// them lets the next packs (and the where index, made here a node at
	// a time rather than beside the arena) reuse their pages; otherwise
	// the packs would all be new pages on top of the encodings they copy.
	// The rows forgotten above were never in the index.
	freed := 0
	for _, e := range s.nodes {
		e.pack = s.packLocked(e)
		for _, r := range e.pack.rows {
			s.where.add(r)
		}
		if freed += arena.drop(e); freed >= packGCEvery {
			runtime.GC()
			freed = 0
		}
	}
	// The load left garbage (the arena, what the decoding and the index
	// made and dropped) and the heap grew to hold it beside the table.
	// Return those pages now rather than keep them for the life of the
	// daemon: the table is read once, at start. A small table is not
	// worth the collection (start to ready counts).
	if len(s.rows) >= 10_000 {
		debug.FreeOSMemory()
	}
	return nil
}

// packGCEvery is how many bytes of the load's arena the packing frees
// between two collections. With 100,000 disks (15 MiB of arena) and
// every 1 MiB the daemon's VmHWM at start was 56 MiB, at 4 MiB 63-64,
// for 130 ms more CPU than at 4 MiB (15 collections; the load took
// 0.6-0.7 s of CPU in all).
const packGCEvery = 1 << 20

// loadArena holds the encodings Load makes, each node's in chunks of its
// own (packChunk bytes, as a pack's), rather than each in an allocation
// of its own between other nodes': packing a node then frees whole
// chunks, whose pages the next packs can take.
type loadArena struct {
	cur   map[*nodeEntry]*strings.Builder
	bytes map[*nodeEntry]int
}

func newLoadArena() *loadArena {
	return &loadArena{cur: make(map[*nodeEntry]*strings.Builder), bytes: make(map[*nodeEntry]int)}
}

// keep returns a copy of enc, a row of e's encoding, in e's chunks.
func (a *loadArena) keep(e *nodeEntry, enc []byte) string {
	b := a.cur[e]
	if b == nil || b.Cap()-b.Len() < len(enc) {
		b = new(strings.Builder)
		b.Grow(max(packChunk, len(enc)))
		a.cur[e] = b
	}
	n := b.Len()
	b.Write(enc)
	a.bytes[e] += len(enc)
	return b.String()[n:]
}

// drop lets go of e's chunks (its rows are packed), returning their size.
func (a *loadArena) drop(e *nodeEntry) int {
	n := a.bytes[e]
	delete(a.cur, e)
	delete(a.bytes, e)
	return n
}

// ownSighting and ownDisk copy the strings of a value Load decoded, which
// share its buffer.
func ownSighting(p *disk.Sighting) {
	p.Node, p.Host, p.Name, p.Device = disk.NodeID(strings.Clone(string(p.Node))),
		strings.Clone(p.Host), strings.Clone(p.Name), strings.Clone(p.Device)
}

func ownDisk(d *disk.Disk) {
	for _, p := range []*string{&d.ID, (*string)(&d.Node), &d.Host, &d.Name, &d.Device, &d.MajMin, &d.UUID,
		&d.PartUUID, &d.Label, &d.PartLabel, &d.Type, &d.Usage, (*string)(&d.Row)} {
		*p = strings.Clone(*p)
	}
	for i := range d.Mounts {
		d.Mounts[i] = strings.Clone(d.Mounts[i])
	}
}

// uniqueQuietLocked sets NotUnique on identity id's rows without events
// (at load, before anyone subscribes).
func (s *Store) uniqueQuietLocked(id string) {
	rs := append([]*row{s.rows[disk.Key(id)]}, s.clones[id]...)
	n := 0
	for _, r := range rs {
		if r != nil && r.d.Present {
			n++
		}
	}
	for _, r := range rs {
		if r != nil && r.d.NotUnique != (n >= 2) {
			r.d.NotUnique = n >= 2
			r.reencode()
		}
	}
}

// Flush writes every dirty record in one transaction.
func (s *Store) Flush(db *DB) error {
	nodes, rows, forgetNodes, forgetRows := s.takeDirty()
	if len(nodes)+len(rows)+len(forgetNodes)+len(forgetRows) == 0 {
		return nil
	}
	// In key order, with pages packed: a big first save (or a migration)
	// then fills bbolt's pages instead of leaving each split half empty.
	slices.SortFunc(rows, func(a, b rowRecord) int { return cmp.Compare(a.Disk.Row, b.Disk.Row) })
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		nb, rb := tx.Bucket(bucketNodes), tx.Bucket(bucketRows)
		if len(rows) > 64 {
			rb.FillPercent = 0.9
		}
		for _, n := range nodes {
			v, err := json.Marshal(n)
			if err != nil {
				return err
			}
			if err := nb.Put([]byte(n.ID), v); err != nil {
				return err
			}
		}
		for _, r := range rows {
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := rb.Put([]byte(r.Disk.Row), v); err != nil {
				return err
			}
		}
		for _, id := range forgetNodes {
			if err := nb.Delete([]byte(id)); err != nil {
				return err
			}
		}
		for _, k := range forgetRows {
			if err := rb.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.requeueDirty(nodes, rows, forgetNodes, forgetRows)
		return fmt.Errorf("save state to %s: %w", db.Path, err)
	}
	s.flushes.Add(1)
	db.dropResident()
	return nil
}

// dropResident lets go of the pages of the state file this process has
// mapped. bbolt reads the file through a shared, read-only mapping, and
// every page a load or a write touched would stay counted in the daemon's
// RSS (63 MiB with 100,000 disks, all of it touched once by Load). The
// pages stay in the page cache for whoever needs them; the next read
// faults them back in. Only the store's one writer calls it, between
// transactions, so no remap can race with it.
func (db *DB) dropResident() {
	dropPages(db.mappedSpan())
}

func dropPages(addr, n uintptr) {
	if n > 0 {
		unix.Syscall(unix.SYS_MADVISE, addr, n, unix.MADV_DONTNEED)
	}
}

// dropEvery is how many records a whole-file read (the load) reads
// between two drops of the pages it touched: about 3 MiB of file with
// rows of 100 disks' peers (0.7 KiB a record).
const dropEvery = 4096

// pageDropper drops the pages of the state file a whole-file read has
// touched as it goes, so that reading 100,000 disks never holds the file
// resident: it was 56 MiB of the daemon's peak RSS at start (VmHWM 133
// MiB, the file's pages on top of the heap the load builds). Dropping
// inside a read transaction is safe: bbolt remaps only in a write
// transaction, which waits for the readers (its mmap lock), and a dropped
// page that is read again faults back in from the page cache unchanged.
type pageDropper struct {
	addr, n uintptr
	reads   int
}

// readDropper covers tx's pages in use (see mappedSpan: never past the
// mapping).
func (db *DB) readDropper(tx *bolt.Tx) *pageDropper {
	addr, n := db.span(tx)
	return &pageDropper{addr: addr, n: n}
}

// read counts one record read and drops the pages every dropEvery.
func (p *pageDropper) read() {
	if p.reads++; p.reads%dropEvery == 0 {
		dropPages(p.addr, p.n)
	}
}

// all drops every page the read touched, at its end.
func (p *pageDropper) all() { dropPages(p.addr, p.n) }

// mappedSpan is the part of bbolt's mapping that holds the database: its
// pages in use, which bbolt always maps. Not the file's size: bbolt grows
// the file ahead of its mapping (by 16 MiB steps), and MADV_DONTNEED past
// the mapping's end would zero whatever memory follows it, the Go heap
// included (a "bad sweepgen" crash after a 100,000-disk save).
func (db *DB) mappedSpan() (addr, n uintptr) {
	db.bolt.View(func(tx *bolt.Tx) error {
		addr, n = db.span(tx)
		return nil
	})
	return addr, n
}

// span is mappedSpan as tx sees it.
func (db *DB) span(tx *bolt.Tx) (addr, n uintptr) {
	if size := tx.Size(); size > 0 {
		return db.bolt.Info().Data, uintptr(size)
	}
	return 0, 0
}

// RunPersist saves dirty records delay after the first change of a batch,
// and everything (with fresh last-seen times) when ctx ends.
func (s *Store) RunPersist(ctx context.Context, db *DB, delay time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			s.markAllPresentDirty()
			return s.Flush(db)
		case <-s.dirtyC:
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		if err := s.Flush(db); err != nil {
			// Keep serving; the records stay dirty and are retried.
			s.log.Error("persist", "err", err)
		}
	}
}

// markAllPresentDirty queues present disks so their last-seen times, which
// unchanged reports refresh without a write, reach the file at a clean stop.
func (s *Store) markAllPresentDirty() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.nodes {
		s.dirty.nodes[e.node.ID] = true
		for _, r := range e.rows {
			if r.d.Present {
				s.dirty.rows[r.key()] = true
			}
		}
	}
}

// dirtySet holds the keys whose records must be written (true) or
// deleted (false).
type dirtySet struct {
	nodes map[disk.NodeID]bool
	rows  map[disk.Key]bool
}

func newDirtySet() dirtySet {
	return dirtySet{nodes: make(map[disk.NodeID]bool), rows: make(map[disk.Key]bool)}
}

func (d dirtySet) forgetRow(k disk.Key)      { d.rows[k] = false }
func (d dirtySet) forgetNode(id disk.NodeID) { d.nodes[id] = false }

func (s *Store) markRow(r *row) {
	s.invalidateLocked(r)
	s.dirty.rows[r.key()] = true
	s.signalDirty()
}

func (s *Store) markNode(e *nodeEntry) {
	s.dirty.nodes[e.node.ID] = true
	s.signalDirty()
}

func (s *Store) signalDirty() {
	select {
	case s.dirtyC <- struct{}{}:
	default:
	}
}

// takeDirty copies the dirty records out under the lock, so encoding and
// disk I/O happen without holding it.
func (s *Store) takeDirty() (nodes []disk.Node, rows []rowRecord, forgetNodes []disk.NodeID, forgetRows []disk.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, put := range s.dirty.nodes {
		if e, ok := s.nodes[id]; put && ok {
			nodes = append(nodes, s.nodeCopy(e))
		} else if !put {
			forgetNodes = append(forgetNodes, id)
		}
	}
	for k, put := range s.dirty.rows {
		if !put {
			forgetRows = append(forgetRows, k)
			continue
		}
		if r, ok := s.rows[k]; ok {
			rec := rowRecord{Disk: r.diskCopy(), Since: r.since(), Past: slices.Clone(r.past())}
			if rec.Since.Equal(rec.Disk.FirstSeen) {
				rec.Since = time.Time{}
			}
			rows = append(rows, rec)
		}
	}
	s.dirty = newDirtySet()
	return
}

func (s *Store) requeueDirty(nodes []disk.Node, rows []rowRecord, forgetNodes []disk.NodeID, forgetRows []disk.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range nodes {
		if _, ok := s.dirty.nodes[n.ID]; !ok {
			s.dirty.nodes[n.ID] = true
		}
	}
	for _, r := range rows {
		if _, ok := s.dirty.rows[r.Disk.Row]; !ok {
			s.dirty.rows[r.Disk.Row] = true
		}
	}
	for _, id := range forgetNodes {
		if _, ok := s.dirty.nodes[id]; !ok {
			s.dirty.nodes[id] = false
		}
	}
	for _, k := range forgetRows {
		if _, ok := s.dirty.rows[k]; !ok {
			s.dirty.rows[k] = false
		}
	}
	s.signalDirty()
}

// Flushes counts the transactions Flush committed, so tests and status can
// tell how often the state file is written.
func (s *Store) Flushes() uint64 { return s.flushes.Load() }
