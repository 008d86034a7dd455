package peer_test

import (
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

func TestPropagation(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	var nodes []*node
	for _, h := range hosts {
		nodes = append(nodes, startNode(t, h, nil))
	}
	a := nodes[0]
	a.st.SetLocal(loopDisks("h1", 2))
	for _, n := range nodes[1:] {
		testutil.Eventually(t, 3*time.Second, n.h.Hostname+" lists h1's disks", func() bool {
			return len(n.disksOf(a.id())) == 2
		})
	}
	a.st.SetLocal(loopDisks("h1", 1))
	for _, n := range nodes[1:] {
		testutil.Eventually(t, 3*time.Second, n.h.Hostname+" drops h1's second disk", func() bool {
			return len(n.disksOf(a.id())) == 1
		})
		if w := n.st.Where("h1_1"); len(w) != 1 || w[0].Present || w[0].Host != "dkd-h1" {
			t.Errorf("%s: where h1_1 = %+v", n.h.Hostname, w)
		}
	}
}
