package plan

import (
	"bufio"
	"encoding/json"
	"io"
)

// WriteJSON writes the plan as indented JSON, the bytes json.Encoder with
// SetIndent("", "  ") would write, a change at a time: the plan of a large
// site is tens of megabytes, and no more than one change of it is held
// encoded at once.
func (p *Plan) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	site, err := json.Marshal(p.Site)
	if err != nil {
		return err
	}
	bw.WriteString("{\n  \"site\": ")
	bw.Write(site)
	bw.WriteString(",\n  \"changes\": ")
	switch {
	case p.Changes == nil:
		bw.WriteString("null")
	case len(p.Changes) == 0:
		bw.WriteString("[]")
	default:
		bw.WriteString("[")
		for i := range p.Changes {
			b, err := json.MarshalIndent(&p.Changes[i], "    ", "  ")
			if err != nil {
				return err
			}
			if i > 0 {
				bw.WriteString(",")
			}
			bw.WriteString("\n    ")
			bw.Write(b)
		}
		bw.WriteString("\n  ]")
	}
	// The remaining fields, in Plan's order, as MarshalIndent writes them
	// inside an object: "{\n" + fields + "\n}". Plan itself is marshalled,
	// so a field added to it is never left out here; the two fields above
	// are hidden by shallower, empty fields of the same JSON name, which
	// win over the embedded ones and are omitted.
	rest, err := json.MarshalIndent(struct {
		*Plan
		Site    string   `json:"site,omitempty"`
		Changes []Change `json:"changes,omitempty"`
	}{Plan: p}, "", "  ")
	if err != nil {
		return err
	}
	bw.WriteString(",\n")
	bw.Write(rest[2:])
	bw.WriteString("\n")
	return bw.Flush()
}
