package conlog

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// uart is a console that moves bytesPerSec, as a 115200-baud serial line does (about 11.5
// KB/s with start and stop bits).
type uart struct {
	mu          sync.Mutex
	buf         bytes.Buffer
	bytesPerSec int
}

func (u *uart) Write(p []byte) (int, error) {
	time.Sleep(time.Duration(len(p)) * time.Second / time.Duration(u.bytesPerSec))
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.buf.Write(p)
}

func (u *uart) String() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.buf.String()
}

// TestFloodAtUARTRate: four personas flood a 115200-baud console. bay0's writer never waits
// on it (each write returns at once), none of bay0's lines is lost or reordered, and the
// personas' overflow is dropped and counted.
func TestFloodAtUARTRate(t *testing.T) {
	con := &uart{bytesPerSec: 11520}
	m := New(con)
	m.Start()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range 4 {
		src := m.Source(fmt.Sprintf("persona p%d", p), 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			line := []byte(fmt.Sprintf("persona p%d: %s\n", p, strings.Repeat("x", 100)))
			for {
				select {
				case <-stop:
					return
				default:
					src.Write(line)
					// A persona's pump delivers about 100 KB/s here: ten times the UART.
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	const bayLines = 200
	var slowest time.Duration
	for i := range bayLines {
		start := time.Now()
		fmt.Fprintf(m.Bay(), "bay0: event=tick n=%d\n", i)
		slowest = max(slowest, time.Since(start))
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	m.Flush(10 * time.Second)
	if slowest > 100*time.Millisecond {
		t.Errorf("a bay0 write waited %s on the console", slowest)
	}
	out := con.String()
	next := 0
	for _, l := range strings.Split(out, "\n") {
		if n, ok := strings.CutPrefix(l, "bay0: event=tick n="); ok {
			got, _ := strconv.Atoi(n)
			if got != next {
				t.Fatalf("bay0 line %d came where %d was due", got, next)
			}
			next++
		}
	}
	if next != bayLines {
		t.Errorf("%d of bay0's %d lines reached the console", next, bayLines)
	}
	drops := regexp.MustCompile(`bay0: console: persona p\d: (\d+) lines dropped`).FindAllStringSubmatch(out, -1)
	if len(drops) == 0 {
		t.Error("the flood was not dropped and counted")
	}
	t.Logf("figure: %d bytes on the console, %d drop notices, slowest bay0 write %s", len(out), len(drops), slowest)
}

// TestBeforeStartWritesThrough: before Start, lines go out at once and in order, a partial
// prompt included.
func TestBeforeStartWritesThrough(t *testing.T) {
	var out bytes.Buffer
	m := New(&out)
	fmt.Fprint(m.Bay(), "bay0: enter passphrase: ")
	if out.String() != "bay0: enter passphrase: " {
		t.Fatalf("console %q", out.String())
	}
}
