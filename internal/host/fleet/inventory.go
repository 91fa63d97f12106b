package fleet

import (
	"fmt"
	"os"
	"regexp"

	"alpinespine.org/spine/internal/host/tomlconf"
)

// Machine is one entry of the inventory: a name for people and the address of its control
// line (a unix socket path, unix://PATH, or tcp://HOST:PORT).
type Machine struct {
	Name    string `toml:"name"`
	Control string `toml:"control"`
}

// Inventory lists the machines of a fleet, in the order the rollout takes them: the first is
// the canary.
type Inventory struct {
	Machines []Machine `toml:"machine"`
}

var machineName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// LoadInventory reads an inventory file:
//
//	[[machine]]
//	name = "edge-1"
//	control = "tcp://console.example:7001"
func LoadInventory(path string) (Inventory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	inv, err := ParseInventory(b)
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory %s: %w", path, err)
	}
	return inv, nil
}

// ParseInventory decodes and checks an inventory.
func ParseInventory(b []byte) (Inventory, error) {
	var inv Inventory
	if err := tomlconf.DecodeStrict(b, &inv); err != nil {
		return Inventory{}, err
	}
	if len(inv.Machines) == 0 {
		return Inventory{}, fmt.Errorf("no [[machine]] entries")
	}
	seen := map[string]bool{}
	for i, m := range inv.Machines {
		if !machineName.MatchString(m.Name) {
			return Inventory{}, fmt.Errorf("machine %d: name %q: want 1-63 letters, digits, '.', '_' or '-'", i+1, m.Name)
		}
		if seen[m.Name] {
			return Inventory{}, fmt.Errorf("machine %q is listed twice", m.Name)
		}
		seen[m.Name] = true
		if m.Control == "" {
			return Inventory{}, fmt.Errorf("machine %q: no control line", m.Name)
		}
	}
	return inv, nil
}

// Waves splits n machines into the rollout's waves: the first `canary` alone, then `percent`
// of the fleet (at least one machine), then the rest.
func Waves(n, canary, percent int) [][]int {
	var waves [][]int
	next := 0
	take := func(k int) {
		k = min(k, n-next)
		if k <= 0 {
			return
		}
		w := make([]int, k)
		for i := range w {
			w[i] = next + i
		}
		waves = append(waves, w)
		next += k
	}
	take(max(canary, 1))
	take(max((n*percent+99)/100, 1))
	take(n - next)
	return waves
}
