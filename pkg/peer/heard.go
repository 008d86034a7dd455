package peer

import (
	"context"
	"slices"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// Heard is one peer heard directly on our links (its own datagrams, not a
// relay's), with the inventory generation the store holds from it. The
// gossip path relays these into the gossip network.
type Heard struct {
	ID         disk.NodeID
	Name       string
	Instance   uint64
	Generation uint64 // applied to the store; meaningful when Applied
	Digest     wire.Digest
	Applied    bool // the store holds this instance's inventory
}

// Heard returns the peers online on the multicast path, by ID.
func (s *Service) Heard(ctx context.Context) ([]Heard, error) {
	var out []Heard
	err := s.do(ctx, func(d *driver) { out = d.m.Heard() })
	return out, err
}

// Heard returns the peers online, by ID.
func (m *Machine) Heard() []Heard {
	var out []Heard
	for _, ps := range m.peers {
		if !ps.online || ps.instance == 0 {
			continue
		}
		h := Heard{ID: ps.did, Name: ps.name, Instance: ps.instance}
		if inst, gen, dg, ok := m.asm.Applied(ps.id); ok && inst == ps.instance {
			h.Generation, h.Digest, h.Applied = gen, dg, true
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Heard) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}
