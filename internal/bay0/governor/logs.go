package governor

import (
	"fmt"
	"io"
	"path/filepath"

	"alpinespine.org/spine/internal/bay0/conlog"
	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/supervise"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/policy"
)

// personaLog is one persona's recent lines, in a ring of its own (a noisy neighbour fills
// only its own ring), and, when its policy says log_persist, kept in /persist as well.
type personaLog struct {
	ring *control.LogRing
	keep *conlog.Keep // nil: the lines live in RAM only
}

// personaLogs is every persona's log, by name; the set is fixed by the policy at boot.
type personaLogs map[string]*personaLog

// openPersonaLogs makes a ring for every persona of the policy and opens the kept logs of
// those that ask for one, with their last lines read back into the ring. A kept log that
// cannot be opened (no /persist, a broken subtree) leaves the persona's lines in RAM, and
// says so: it is no reason to refuse the persona.
func (g *Governor) openPersonaLogs(pol policy.Policy, persistRoot string) personaLogs {
	logs := personaLogs{}
	for _, p := range pol.Personas {
		l := &personaLog{ring: control.NewLogRing(0, 0)}
		logs[p.Name] = l
		if !p.LogPersist {
			continue
		}
		if persistRoot == "" {
			g.logf("persona %s: logs kept in RAM only: /persist is not mounted", p.Name)
			continue
		}
		keep, tail, err := openKeep(filepath.Join(persistRoot, conlog.KeepDir, p.Name), int64(p.LogSize))
		if err != nil {
			g.logf("persona %s: logs kept in RAM only: %v", p.Name, err)
			continue
		}
		for _, line := range tail {
			fmt.Fprintln(l.ring, line)
		}
		name := p.Name
		keep.OnFail = func(err error) { g.logf("persona %s: lines not kept in /persist: %v", name, err) }
		l.keep = keep
		g.emit(event.New(event.LogsKept).With("name", p.Name).Int("lines", int64(len(tail))).Int("bytes", int64(p.LogSize)))
		fmt.Fprintf(keep, "bay0: persona %s: a new boot begins\n", p.Name)
		fmt.Fprintf(l.ring, "bay0: persona %s: a new boot begins\n", p.Name)
	}
	return logs
}

// openKeep opens a kept log and reads back its last lines, as many as a ring holds.
func openKeep(dir string, limit int64) (*conlog.Keep, []string, error) {
	keep, err := conlog.OpenKeep(dir, limit)
	if err != nil {
		return nil, nil, err
	}
	tail, err := keep.Tail(control.DefaultLogLines, control.DefaultLogLines*control.DefaultLogLineLen)
	if err != nil {
		keep.Close()
		return nil, nil, err
	}
	return keep, tail, nil
}

// output is where the persona's lines go: the console's queue, its ring, its kept log.
func (l personaLogs) output(con *conlog.Mux, name string) io.Writer {
	w := []io.Writer{con.Source("persona "+name, 0)}
	if pl := l[name]; pl != nil {
		w = append(w, pl.ring)
		if pl.keep != nil {
			w = append(w, pl.keep)
		}
	}
	return io.MultiWriter(w...)
}

// lines answers the logs verb for a persona.
func (l personaLogs) lines(name string, after uint64) (control.LogsResult, error) {
	pl := l[name]
	if pl == nil {
		return control.LogsResult{}, fmt.Errorf("logs %q: %w", name, supervise.ErrUnknown)
	}
	return pl.ring.Since(after), nil
}

// close closes the kept logs, so that nothing holds /persist open when the machine ends.
func (l personaLogs) close() {
	for _, pl := range l {
		if pl.keep != nil {
			pl.keep.Close()
		}
	}
}
