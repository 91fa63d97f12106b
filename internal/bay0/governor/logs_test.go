package governor

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"testing"

	"alpinespine.org/spine/internal/format/policy"
)

type rw struct{ bytes.Buffer }

func (r *rw) Read([]byte) (int, error) { return 0, io.EOF }

// TestNoisyPersonaPushesOutOnlyItsOwnLines: a persona's flood fills its own ring, never bay0's
// nor a quiet neighbour's, so `spine ctl logs` and `spine ctl logs db` still show their lines.
func TestNoisyPersonaPushesOutOnlyItsOwnLines(t *testing.T) {
	g := New(&rw{})
	g.logf("slot a committed")
	logs := g.openPersonaLogs(policy.Policy{Personas: []policy.Persona{{Name: "web"}, {Name: "db"}}}, "")
	h := &ctlHandler{g: g, r: &running{personas: &personas{logs: logs}}}
	fmt.Fprintf(logs.output(g.con, "db"), "persona db: ready\n")
	web := logs.output(g.con, "web")
	for i := range 10000 {
		fmt.Fprintf(web, "persona web: flood %d\n", i)
	}
	own, err := h.Logs("", 0)
	if err != nil || !slices.Contains(own.Lines, "bay0: slot a committed") || slices.Contains(own.Lines, "persona web: flood 9999") {
		t.Errorf("bay0's own logs = %d lines, %v: want its line and none of the flood", len(own.Lines), err)
	}
	db, err := h.Logs("db", 0)
	if err != nil || !slices.Equal(db.Lines, []string{"persona db: ready"}) {
		t.Errorf("logs db = %q, %v: the neighbour's flood pushed its line out", db.Lines, err)
	}
	w, err := h.Logs("web", 0)
	if err != nil || w.Lines[len(w.Lines)-1] != "persona web: flood 9999" || w.Next != 10000 || w.First != 10001-uint64(len(w.Lines)) {
		t.Errorf("logs web: %d lines, first %d, next %d, %v", len(w.Lines), w.First, w.Next, err)
	}
	if w, _ := h.Logs("web", 9998); !slices.Equal(w.Lines, []string{"persona web: flood 9998", "persona web: flood 9999"}) || w.First != 9999 {
		t.Errorf("logs web after 9998 = %q (first %d)", w.Lines, w.First)
	}
	if _, err := h.Logs("cache", 0); err == nil {
		t.Error("logs of a persona the policy does not have succeeded")
	}
}

// TestKeptLogsSurviveABoot: with log_persist, a persona's lines are read back into its ring at
// the next boot, after which a marker line says where the new boot begins; another persona's
// lines never are.
func TestKeptLogsSurviveABoot(t *testing.T) {
	persist := t.TempDir()
	pol := policy.Policy{Personas: []policy.Persona{{Name: "web", LogPersist: true, LogSize: policy.MinLogSize}, {Name: "db"}}}
	g := New(&rw{})
	logs := g.openPersonaLogs(pol, persist)
	fmt.Fprintf(logs.output(g.con, "web"), "persona web: first boot\n")
	fmt.Fprintf(logs.output(g.con, "db"), "persona db: first boot\n")
	logs.close()

	g = New(&rw{})
	logs = g.openPersonaLogs(pol, persist)
	defer logs.close()
	web, _ := logs.lines("web", 0)
	want := []string{"bay0: persona web: a new boot begins", "persona web: first boot", "bay0: persona web: a new boot begins"}
	if !slices.Equal(web.Lines, want) {
		t.Errorf("web after a reboot = %q, want %q", web.Lines, want)
	}
	if db, _ := logs.lines("db", 0); len(db.Lines) != 0 {
		t.Errorf("db kept no logs, yet shows %q after a reboot", db.Lines)
	}
}
