package inventory_test

import (
	"testing"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{New: func(t *testing.T) inventory.KV { return inventory.NewMemoryKV() }})
}
