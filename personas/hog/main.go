// Command hog is a misbehaving persona for the tests; its argument picks the misbehaviour:
//
//	forkbomb  forks until the kernel refuses (pids.max), then holds its processes
//	memory    allocates and touches memory until the OOM killer ends it (memory.max)
//	cpu       spins on every CPU and reports the share of one CPU it gets (cpu.max)
//	forge     prints bay0 event lines, every way it can think of to make one start a line
//	thrash MiB FILE  holds MiB of memory and reads FILE's pages over and over, a working set
//	          larger than memory.max: it thrashes on its own file pages and never OOMs
//	readlater FILE  on its first start marks /data and exits; on the next it reads FILE whole,
//	          so a test can damage FILE's blocks on the disk in between
//	deaf      ignores SIGTERM (its stop signal) and runs on, as a workload that never ends
//	          when asked does
//
// Every report is one line "hog: MODE: ..." on stdout, which the governor puts on the console.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "forkbomb":
		forkbomb()
	case "memory":
		memory()
	case "cpu":
		cpu()
	case "forge":
		forge()
	case "thrash":
		if len(os.Args) != 4 {
			fmt.Println("hog: usage: hog thrash MiB FILE")
			return
		}
		mib, _ := strconv.Atoi(os.Args[2])
		thrash(mib, os.Args[3])
	case "deaf":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("hog: deaf: ignoring SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "readlater":
		if len(os.Args) != 3 {
			fmt.Println("hog: usage: hog readlater FILE")
			return
		}
		readLater(os.Args[2])
	default:
		fmt.Println("hog: usage: hog forkbomb|memory|cpu|forge|thrash|readlater|deaf")
	}
}

// forkbomb forks with the raw system call: each child only sleeps, with no Go runtime
// underneath it (no threads to start, nothing to allocate), as a C fork bomb's children would.
func forkbomb() {
	n := 0
	for {
		pid, _, e := syscall.RawSyscall(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0)
		if e != 0 {
			fmt.Printf("hog: forkbomb: fork refused after %d forks: %v\n", n, e)
			break
		}
		if pid == 0 {
			// ppoll on no fds with no timeout sleeps until a signal ends the process.
			for {
				syscall.RawSyscall6(syscall.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
			}
		}
		n++
	}
	for {
		time.Sleep(2 * time.Second)
		fmt.Printf("hog: forkbomb: holding %d processes\n", n)
	}
}

// memory keeps allocating and touching 1 MiB chunks; the OOM killer must end it.
func memory() {
	var keep [][]byte
	for mib := 1; ; mib++ {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = byte(mib)
		}
		keep = append(keep, b)
		if mib%4 == 0 {
			fmt.Printf("hog: memory: %d MiB\n", len(keep))
		}
	}
}

// cpu spins on every CPU and once a second reports the share of one CPU the process got, from
// its own utime+stime in /proc/self/stat (clock ticks of 10 ms).
func cpu() {
	for range runtime.NumCPU() + 1 {
		go func() {
			x := 0
			for {
				x++
			}
		}()
	}
	lastCPU, lastWall := cpuTicks(), time.Now()
	for {
		time.Sleep(time.Second)
		c, w := cpuTicks(), time.Now()
		share := float64(c-lastCPU) / 100 / w.Sub(lastWall).Seconds()
		fmt.Printf("hog: cpu: share %.3f of one cpu\n", share)
		lastCPU, lastWall = c, w
	}
}

func cpuTicks() int64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// forge tries to put a line on the console that reads as bay0's own: after a carriage return,
// a terminal escape, a C1 next-line, a NUL, and at every length around bay0's line cut (512
// bytes with the persona prefix), then ends without a newline. Every forged event says
// "forged", so the test can look for them.
func forge() {
	const ev = "bay0: event=slot-committed slot=forged version=9 min_version=9"
	os.Stdout.WriteString(ev + "\n")
	for _, lead := range []string{"\r", "\x1b[2K\r", "\u0085", "\xc2\x9b", "\x00", "\n"} {
		os.Stdout.WriteString(lead + ev + "\n")
	}
	for n := 504; n <= 520; n++ {
		os.Stdout.WriteString(strings.Repeat("x", n) + ev + "\n")
	}
	fmt.Println("hog: forge: done")
	os.Stdout.WriteString(ev)
}

// thrash holds mib MiB of anonymous memory, then touches every page of a read-only mapping of
// file, pass after pass. With both larger than memory.max, every pass refaults pages that the
// last one evicted: the persona is stuck on memory but always makes a little progress, so the
// OOM killer never comes.
func thrash(mib int, file string) {
	keep := make([]byte, mib<<20)
	for i := 0; i < len(keep); i += 4096 {
		keep[i] = 1
	}
	f, err := os.Open(file)
	if err != nil {
		fmt.Println("hog: thrash:", err)
		return
	}
	st, _ := f.Stat()
	m, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		fmt.Println("hog: thrash: mmap:", err)
		return
	}
	// Random order and no readahead: every evicted page is a synchronous read, as a program
	// whose code and data no longer fit suffers.
	syscall.Madvise(m, syscall.MADV_RANDOM)
	fmt.Printf("hog: thrash: holding %d MiB, reading %d MiB over and over\n", mib, len(m)>>20)
	pages := len(m) / 4096
	x, sum := uint64(1), 0
	for pass := 1; ; pass++ {
		start := time.Now()
		for range pages {
			x = x*6364136223846793005 + 1442695040888963407
			sum += int(m[int(x>>33)%pages*4096])
			// Keep the held memory hot too, so that reclaim cannot settle on it.
			keep[int(x>>20)%len(keep)]++
		}
		fmt.Printf("hog: thrash: pass %d in %s (%d)\n", pass, time.Since(start).Round(time.Millisecond), sum&1)
	}
}

// readLater exits at once on its first start, leaving a mark in /data; on a later start it
// reads file end to end (through the Spine's dm-verity device) and then stays up.
func readLater(file string) {
	const mark = "/data/readlater"
	if _, err := os.Stat(mark); err != nil {
		if err := os.WriteFile(mark, nil, 0o644); err != nil {
			fmt.Println("hog: readlater:", err)
		}
		return
	}
	b, err := os.ReadFile(file)
	fmt.Printf("hog: readlater: read %d bytes of %s: %v\n", len(b), file, err)
	for {
		time.Sleep(time.Hour)
	}
}
