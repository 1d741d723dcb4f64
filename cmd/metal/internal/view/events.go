package view

import (
	"fmt"

	"github.com/metal-dev/metal/inventory"
)

// Event is one event for people: local time, kind, machine, message.
func Event(e inventory.Event) string {
	who := e.Machine
	if who == "" {
		who = e.MAC
	}
	if who == "" {
		who = "-"
	}
	return fmt.Sprintf("%s  %-13s %-20s %s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind, who, e.Message)
}
