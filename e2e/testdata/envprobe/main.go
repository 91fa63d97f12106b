// Command envprobe is a persona of the e2e suite that reports the environment bay0 gave it, one
// line each: who it runs as, its open files limit, its /etc/hosts and /etc/resolv.conf, whether
// it reaches the address in its argument (the host, through QEMU's user network); then it fills
// /dev/shm until something stops it: the tmpfs's size, or the persona's memory limit.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	fmt.Printf("envprobe: ids %d:%d\n", os.Getuid(), os.Getgid())
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Printf("envprobe: nofile %d %d\n", lim.Cur, lim.Max)
	for _, f := range []string{"/etc/hosts", "/etc/resolv.conf"} {
		b, err := os.ReadFile(f)
		fmt.Printf("envprobe: %s %q %v\n", f, b, err)
	}
	if len(os.Args) > 1 {
		fmt.Printf("envprobe: dial %s: %s\n", os.Args[1], dial(os.Args[1]))
	}
	f, err := os.Create("/dev/shm/fill")
	if err != nil {
		fmt.Printf("envprobe: shm: %v\n", err)
		select {}
	}
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	for n := 1; ; n++ {
		if _, err := f.Write(chunk); err != nil {
			fmt.Printf("envprobe: shm stopped after %d MiB: %v\n", n-1, err)
			select {}
		}
		fmt.Printf("envprobe: shm %d MiB\n", n)
	}
}

func dial(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("read %q", b)
}
