package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/diskd/diskd/pkg/disk"
)

// The state file is a bbolt database: one record per node and per disk, so
// saving a change writes that record, not the table. Writes are batched: a
// change marks its record dirty, and RunPersist writes all dirty records in
// one transaction a short delay later.
var (
	bucketNodes = []byte("nodes")
	bucketDisks = []byte("disks")
)

// DB is the open state file.
type DB struct {
	bolt *bolt.DB
	Path string
}

// OpenDB opens (creating if needed) the state file at path. A file that is
// not a valid database is renamed to PATH.corrupt-TIMESTAMP and a new one
// created; movedAside names it so the caller can report it.
func OpenDB(path string) (db *DB, movedAside string, err error) {
	db, err = openDB(path)
	if err == nil {
		if err = db.check(); err == nil {
			return db, "", nil
		}
		db.Close()
	}
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, "", fmt.Errorf("state file %s is locked: is another diskd using this state directory?", path)
	}
	aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, "", fmt.Errorf("state file %s unreadable (%v) and cannot be moved aside: %w", path, err, rerr)
	}
	db, err2 := openDB(path)
	if err2 != nil {
		return nil, aside, err2
	}
	return db, aside, nil
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
		for _, name := range [][]byte{bucketNodes, bucketDisks} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("init state file %s: %w", path, err)
	}
	return &DB{bolt: b, Path: path}, nil
}

// check reads every record once, so damage shows at open rather than later.
func (db *DB) check() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file %s damaged: %v", db.Path, r)
		}
	}()
	return db.bolt.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			var n disk.Node
			return json.Unmarshal(v, &n)
		}); err != nil {
			return fmt.Errorf("state file %s: node record: %w", db.Path, err)
		}
		return tx.Bucket(bucketDisks).ForEach(func(k, v []byte) error {
			var d disk.Disk
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("state file %s: disk record %q: %w", db.Path, k, err)
			}
			return nil
		})
	})
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Load fills an empty store from db. Peers start offline (they have not
// been heard since the restart) and their disks not present; local disks
// keep their saved state until the first scan replaces it, so a daemon
// whose blkid fails still answers from its last good inventory.
func (s *Store) Load(db *DB) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return db.bolt.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			var n disk.Node
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("load node %q: %w", k, err)
			}
			if n.ID == s.opts.Local.ID {
				return nil // the local node's name and addresses come from this start
			}
			n.Local, n.Online, n.Disks = false, false, 0
			s.nodes[n.ID] = &nodeEntry{node: n, disks: make(map[string]*disk.Disk)}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketDisks).ForEach(func(k, v []byte) error {
			d := new(disk.Disk)
			if err := json.Unmarshal(v, d); err != nil {
				return fmt.Errorf("load disk %q: %w", k, err)
			}
			e, ok := s.nodes[d.Node]
			if !ok {
				return nil // its node record is gone: an interrupted eviction
			}
			if !e.node.Local {
				d.Present = false
			}
			e.disks[d.Name] = d
			return nil
		})
	})
}

// Flush writes every dirty record in one transaction.
func (s *Store) Flush(db *DB) error {
	nodes, disks, forgetNodes, forgetDisks := s.takeDirty()
	if len(nodes)+len(disks)+len(forgetNodes)+len(forgetDisks) == 0 {
		return nil
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		nb, db := tx.Bucket(bucketNodes), tx.Bucket(bucketDisks)
		for _, n := range nodes {
			v, err := json.Marshal(n)
			if err != nil {
				return err
			}
			if err := nb.Put([]byte(n.ID), v); err != nil {
				return err
			}
		}
		for _, d := range disks {
			v, err := json.Marshal(d)
			if err != nil {
				return err
			}
			if err := db.Put([]byte(d.Key().String()), v); err != nil {
				return err
			}
		}
		for _, id := range forgetNodes {
			if err := nb.Delete([]byte(id)); err != nil {
				return err
			}
		}
		for _, k := range forgetDisks {
			if err := db.Delete([]byte(k.String())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.requeueDirty(nodes, disks, forgetNodes, forgetDisks)
		return fmt.Errorf("save state to %s: %w", db.Path, err)
	}
	return nil
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
		for _, d := range e.disks {
			if d.Present {
				s.dirty.disks[d.Key()] = true
			}
		}
	}
}

// dirtySet holds the keys whose records must be written (true) or
// deleted (false).
type dirtySet struct {
	nodes map[disk.NodeID]bool
	disks map[disk.Key]bool
}

func newDirtySet() dirtySet {
	return dirtySet{nodes: make(map[disk.NodeID]bool), disks: make(map[disk.Key]bool)}
}

func (d dirtySet) forgetDisk(k disk.Key)     { d.disks[k] = false }
func (d dirtySet) forgetNode(id disk.NodeID) { d.nodes[id] = false }

func (s *Store) markDisk(d *disk.Disk) {
	s.dirty.disks[d.Key()] = true
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
func (s *Store) takeDirty() (nodes []disk.Node, disks []disk.Disk, forgetNodes []disk.NodeID, forgetDisks []disk.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, put := range s.dirty.nodes {
		if e, ok := s.nodes[id]; put && ok {
			nodes = append(nodes, s.nodeCopy(e))
		} else if !put {
			forgetNodes = append(forgetNodes, id)
		}
	}
	for k, put := range s.dirty.disks {
		if !put {
			forgetDisks = append(forgetDisks, k)
			continue
		}
		if e, ok := s.nodes[k.Node]; ok {
			if d, ok := e.disks[k.Name]; ok {
				disks = append(disks, cloneDisk(d))
			}
		}
	}
	s.dirty = newDirtySet()
	return
}

func (s *Store) requeueDirty(nodes []disk.Node, disks []disk.Disk, forgetNodes []disk.NodeID, forgetDisks []disk.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range nodes {
		if _, ok := s.dirty.nodes[n.ID]; !ok {
			s.dirty.nodes[n.ID] = true
		}
	}
	for _, d := range disks {
		if _, ok := s.dirty.disks[d.Key()]; !ok {
			s.dirty.disks[d.Key()] = true
		}
	}
	for _, id := range forgetNodes {
		if _, ok := s.dirty.nodes[id]; !ok {
			s.dirty.nodes[id] = false
		}
	}
	for _, k := range forgetDisks {
		if _, ok := s.dirty.disks[k]; !ok {
			s.dirty.disks[k] = false
		}
	}
	s.signalDirty()
}
