package dbusapi

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
)

// object is anything published below the ObjectManager: it can say which
// interfaces and property values it has.
type object interface {
	ifaces() contract.Ifaces
	withLive(live object) object
	liveUsec() (uint64, bool)
}

// emitFunc sends a signal; (*dbus.Conn).Emit in the daemon, a recorder in
// tests.
type emitFunc func(path dbus.ObjectPath, name string, args ...any) error

// objectManager is the org.freedesktop.DBus.ObjectManager bookkeeping that
// godbus lacks. It remembers the last state it published for each object
// below root (the state is the store's; this is only what the bus has been
// told, to compute the next signals) and turns each new state into the
// signals the specification asks for:
//
//   - InterfacesAdded(o, a{sa{sv}}) on root for a new object, or for
//     interfaces an object gains;
//   - InterfacesRemoved(o, as) on root for a removed object, or for
//     interfaces it loses;
//   - one PropertiesChanged(s, a{sv}, as) on the object per interface whose
//     properties changed, holding all of that interface's changes.
//
// What it remembers is also what the bus is served (GetManagedObjects,
// Get, GetAll): the state as of the last signal, so a client that reads
// between two changes reads a state that the signals it then receives
// carry forward, never one that no signal will correct (a disk seen gone
// and back within one batch is never served as gone). A batch of changes
// is published under pub, held from updating the state to sending its
// signals (see batch); a reader holds pub for reading from reading the
// state until its reply is written (see method.ordered), so a reply never
// reaches the bus after a signal newer than what it holds.
//
// Only one goroutine publishes; lookups may run concurrently.
type objectManager struct {
	root dbus.ObjectPath
	emit emitFunc
	// flush, when set, sends the signals emit queued; it is called at the
	// end of each batch, before readers may read again, so a batch of
	// changes leaves as one burst of writes.
	flush func() error

	pub sync.RWMutex // see above; taken before mu

	mu      sync.RWMutex
	objects map[dbus.ObjectPath]*published
}

// published is an object as the bus was told it, with its encoding for
// GetManagedObjects, made on first use and kept until the object changes.
type published struct {
	obj     object
	encoded atomic.Pointer[entry]
}

// entry returns the object's encoding at path p.
func (pb *published) entry(p dbus.ObjectPath) (*entry, error) {
	if en := pb.encoded.Load(); en != nil {
		return en, nil
	}
	en, err := encodeEntry(p, pb.obj.ifaces())
	if err != nil {
		return nil, err
	}
	pb.encoded.Store(en)
	return en, nil
}

func newObjectManager(root dbus.ObjectPath, emit emitFunc) *objectManager {
	return &objectManager{root: root, emit: emit, objects: make(map[dbus.ObjectPath]*published)}
}

// load replaces the whole state without signals: what a fresh connection
// starts from, since nobody on the bus has seen anything yet.
func (m *objectManager) load(objs map[dbus.ObjectPath]object) {
	pubs := make(map[dbus.ObjectPath]*published, len(objs))
	for p, o := range objs {
		pubs[p] = &published{obj: o}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects = pubs
}

// batch runs f, which calls setLocked and removeLocked, as one publication:
// readers wait until the signals of all of its changes are sent.
func (m *objectManager) batch(f func(note func(error))) error {
	m.pub.Lock()
	defer m.pub.Unlock()
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	f(note)
	if m.flush != nil {
		note(m.flush())
	}
	return first
}

// sync publishes objs as the complete state: changed and new objects are
// signalled, objects not in objs are removed. It is how the adapter
// catches up after missing store events.
func (m *objectManager) sync(objs map[dbus.ObjectPath]object) error {
	return m.batch(func(note func(error)) {
		m.mu.RLock()
		var gone []dbus.ObjectPath
		for p := range m.objects {
			if _, ok := objs[p]; !ok {
				gone = append(gone, p)
			}
		}
		m.mu.RUnlock()
		slices.Sort(gone)
		for _, p := range gone {
			note(m.removeLocked(p))
		}
		// Parents (machines) before their children (block devices) reads
		// better in a monitor; paths sort that way.
		for _, p := range slices.Sorted(maps.Keys(objs)) {
			note(m.setLocked(p, objs[p]))
		}
	})
}

// set publishes obj's new state at path and emits the difference.
func (m *objectManager) set(path dbus.ObjectPath, obj object) error {
	return m.batch(func(note func(error)) { note(m.setLocked(path, obj)) })
}

// setLocked is set within a batch.
func (m *objectManager) setLocked(path dbus.ObjectPath, obj object) error {
	m.mu.Lock()
	old, existed := m.objects[path]
	m.objects[path] = &published{obj: obj}
	m.mu.Unlock()

	now := obj.ifaces()
	var before contract.Ifaces
	if existed {
		before = old.obj.ifaces()
	}
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	var lost []string
	for name := range before {
		if _, ok := now[name]; !ok {
			lost = append(lost, name)
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		note(m.emit(m.root, contract.ObjectManagerInterface+".InterfacesRemoved", path, lost))
	}
	gained := contract.Ifaces{}
	for _, name := range slices.Sorted(maps.Keys(now)) {
		props := now[name]
		was, ok := before[name]
		if !ok {
			gained[name] = props
			continue
		}
		if changed := changedProps(was, props); len(changed) > 0 {
			note(m.emit(path, contract.PropertiesInterface+".PropertiesChanged", name, changed, []string{}))
		}
	}
	if len(gained) > 0 {
		note(m.emit(m.root, contract.ObjectManagerInterface+".InterfacesAdded", path, gained))
	}
	return first
}

// remove forgets the object at path and says so.
func (m *objectManager) remove(path dbus.ObjectPath) error {
	return m.batch(func(note func(error)) { note(m.removeLocked(path)) })
}

// removeLocked is remove within a batch.
func (m *objectManager) removeLocked(path dbus.ObjectPath) error {
	m.mu.Lock()
	old, ok := m.objects[path]
	delete(m.objects, path)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	names := slices.Sorted(maps.Keys(old.obj.ifaces()))
	return m.emit(m.root, contract.ObjectManagerInterface+".InterfacesRemoved", path, names)
}

// get returns the published object at path.
func (m *objectManager) get(path dbus.ObjectPath) (object, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	pb, ok := m.objects[path]
	if !ok {
		return nil, false
	}
	return pb.obj, true
}

// all returns every published object.
func (m *objectManager) all() map[dbus.ObjectPath]object {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[dbus.ObjectPath]object, len(m.objects))
	for p, pb := range m.objects {
		out[p] = pb.obj
	}
	return out
}

// each calls f for every published object, holding off changes to the
// set of objects (not publication: see reading) until it returns.
func (m *objectManager) each(f func(p dbus.ObjectPath, pb *published) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for p, pb := range m.objects {
		if err := f(p, pb); err != nil {
			return err
		}
	}
	return nil
}

// count is the number of published objects.
func (m *objectManager) count() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.objects)
}

// reading holds off publishing until the returned function is called.
func (m *objectManager) reading() (done func()) {
	m.pub.RLock()
	return m.pub.RUnlock
}

// children returns the names of the path elements directly below parent
// that lead to published objects, sorted.
func (m *objectManager) children(parent dbus.ObjectPath) []string {
	prefix := string(parent) + "/"
	if parent == "/" {
		prefix = "/"
	}
	set := map[string]bool{}
	m.mu.RLock()
	for p := range m.objects {
		if rest, ok := strings.CutPrefix(string(p), prefix); ok && rest != "" {
			name, _, _ := strings.Cut(rest, "/")
			set[name] = true
		}
	}
	m.mu.RUnlock()
	return slices.Sorted(maps.Keys(set))
}

// changedProps returns the properties of now that differ from was.
func changedProps(was, now contract.Props) contract.Props {
	out := contract.Props{}
	for k, v := range now {
		if old, ok := was[k]; !ok || !sameVariant(old, v) {
			out[k] = v
		}
	}
	return out
}

func sameVariant(a, b dbus.Variant) bool {
	return a.Signature() == b.Signature() && reflect.DeepEqual(a.Value(), b.Value())
}
