// Command portinit stands in for the governor in TestPortInQEMU: as /init of an initramfs on
// Spine's kernel (virtio console built in) it observes what the bay0.ctl port does while no host is
// connected, then serves the control channel on it with a fake Handler until asked to power
// off.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/control"
)

func main() {
	ring := control.NewLogRing(0, 0)
	log := io.MultiWriter(os.Stdout, ring)
	fmt.Fprintln(log, "portinit: hello")
	if err := run(log, ring); err != nil {
		fmt.Fprintln(log, "portinit: error:", err)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("portinit: power off:", err)
	}
}

func run(log io.Writer, ring *control.LogRing) error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	// The port appears once the driver has probed the device; give it a moment.
	var port *os.File
	var err error
	for i := 0; ; i++ {
		port, err = control.OpenPort("/sys", "bay0.ctl")
		if err == nil {
			break
		}
		if i == 100 {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(log, "portinit: opened %s\n", port.Name())

	// No host is connected yet (the test connects after "serving"): what do reads and a
	// write do?
	buf := make([]byte, 64)
	start := time.Now()
	var eofs int
	var last error
	for range 20 {
		n, err := port.Read(buf)
		if n == 0 && errors.Is(err, io.EOF) {
			eofs++
		}
		last = err
	}
	fmt.Fprintf(log, "portinit: probe: 20 reads without a host: %d returned 0, EOF in %s (last error %v)\n", eofs, time.Since(start).Round(time.Millisecond), last)
	// A write waits for a host (the driver's will_write_block is true while
	// !host_connected): only a deadline ends it.
	start = time.Now()
	if err := port.SetWriteDeadline(start.Add(300 * time.Millisecond)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	n, err := port.Write([]byte("lost\n"))
	fmt.Fprintf(log, "portinit: probe: write without a host: n=%d, ended by its deadline: %v (%s)\n", n, errors.Is(err, os.ErrDeadlineExceeded), time.Since(start).Round(time.Millisecond))
	if err := port.SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear write deadline: %w", err)
	}

	cp := &countingPort{File: port}
	h := &handler{ring: ring, port: cp, start: time.Now(), poweroff: make(chan struct{}, 1)}
	var progress atomic.Int64
	afterAnswer := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- control.Serve(ctx, cp, h, func() {
			progress.Add(1)
			select {
			case afterAnswer <- struct{}{}:
			default:
			}
		})
	}()
	h.progress = &progress
	fmt.Fprintln(log, "portinit: serving")
	select {
	case err := <-done:
		return fmt.Errorf("serve ended: %w", err)
	case <-h.poweroff:
	}
	// Serve calls progress after writing each answer: the first call after Poweroff returned
	// comes after the answer left (drain the one that may be pending from before).
	select {
	case <-afterAnswer:
	default:
	}
	<-afterAnswer
	fmt.Fprintln(log, "portinit: powering off as asked")
	return nil
}

// countingPort counts the reads that found no host, to show the server does not spin.
type countingPort struct {
	*os.File
	eofs atomic.Int64
}

func (p *countingPort) Read(b []byte) (int, error) {
	n, err := p.File.Read(b)
	if errors.Is(err, io.EOF) {
		p.eofs.Add(1)
	}
	return n, err
}

type handler struct {
	ring     *control.LogRing
	port     *countingPort
	start    time.Time
	progress *atomic.Int64
	poweroff chan struct{}
}

func (h *handler) Status() (control.StatusInfo, error) {
	return control.StatusInfo{
		Spine: "portinit", Version: 1, Slot: "a",
		Slots:    []control.SlotInfo{{Slot: "a", State: "good", Version: 1}, {Slot: "b", State: "empty"}},
		UptimeMS: uint64(time.Since(h.start).Milliseconds()),
		// The test reads the counters from here.
		LastReset: fmt.Sprintf("eof_reads=%d progress=%d", h.port.eofs.Load(), h.progress.Load()),
	}, nil
}

func (h *handler) Personas() ([]control.PersonaInfo, error) {
	return []control.PersonaInfo{{Name: "web", State: "running", PID: 2}}, nil
}

func (h *handler) Logs(_ string, after uint64) (control.LogsResult, error) {
	return h.ring.Since(after), nil
}

func (h *handler) Replace(n string) error { return h.known(n) }
func (h *handler) Stop(n string) error    { return h.known(n) }
func (h *handler) Start(n string) error   { return h.known(n) }
func (h *handler) Reboot() error          { return errors.New("not in this test") }

func (h *handler) Poweroff() error {
	h.poweroff <- struct{}{}
	return nil
}

func (h *handler) known(n string) error {
	if n != "web" {
		return fmt.Errorf("no persona %q", n)
	}
	return nil
}
