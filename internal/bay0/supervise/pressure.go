package supervise

import (
	"fmt"
	"time"

	"alpinespine.org/spine/internal/bay0/persona"
)

// A persona at its memory limit may thrash on its own file pages for minutes without the OOM
// killer ever coming, while it serves nothing (Article III §4: replace, never leave it hanging).
// The supervisor samples each running persona's memory once a second (persona.MemoryStat). A
// persona is stuck when, over its whole stall window (policy memory_stall), it kept running
// into memory.max and either had all its tasks stalled on memory (PSI "full") at least
// StallShare of the time, or faulted back in more evicted pages than its whole memory.max: it
// spends its life re-reading what its limit made it drop. PSI alone misses the second kind: a
// page read back at random is not counted as a stall unless the kernel had marked it as part of
// the working set. A stuck persona is replaced, with the figures logged.

// StallShare is the share of the window a persona must have been fully stalled on memory.
const StallShare = 0.5

// pageSize is the unit of the refault counters.
const pageSize = 4096

// pressureEvery is how often running personas are sampled.
const pressureEvery = time.Second

type memSample struct {
	at   time.Time
	stat persona.MemoryStat
}

// stallWatch holds one instance's samples over its window.
type stallWatch struct {
	window time.Duration
	// memoryMax is the persona's memory.max in bytes.
	memoryMax int64
	samples   []memSample
}

// stall is a verdict: the persona has been stuck at its limit over the whole window.
type stall struct {
	share     float64
	refaulted int64 // bytes
	memoryMax int64
	maxEvents int64
	over      time.Duration
}

func (s stall) String() string {
	return fmt.Sprintf("stuck at memory.max for %s: refaulted %d MiB (%.1fx memory.max), fully stalled %.0f%% of the time, %d max events",
		s.over.Round(time.Second), s.refaulted>>20, float64(s.refaulted)/float64(max(s.memoryMax, 1)), 100*s.share, s.maxEvents)
}

// add records a sample and reports a stall when the samples span the window and show one.
func (w *stallWatch) add(at time.Time, st persona.MemoryStat) (stall, bool) {
	w.samples = append(w.samples, memSample{at, st})
	// Keep the newest sample that is at least a window old as the base, and all after it.
	base := 0
	for i, s := range w.samples {
		if at.Sub(s.at) >= w.window {
			base = i
		}
	}
	w.samples = w.samples[base:]
	first := w.samples[0]
	span := at.Sub(first.at)
	if span < w.window || span <= 0 || st.FullStallUS < first.stat.FullStallUS {
		return stall{}, false
	}
	share := float64(st.FullStallUS-first.stat.FullStallUS) / float64(span.Microseconds())
	events := st.MaxEvents - first.stat.MaxEvents
	refaulted := (st.Refaults - first.stat.Refaults) * pageSize
	if events <= 0 || share < StallShare && (w.memoryMax <= 0 || refaulted < w.memoryMax) {
		return stall{}, false
	}
	return stall{share: min(share, 1), refaulted: max(refaulted, 0), memoryMax: w.memoryMax, maxEvents: events, over: span}, true
}
