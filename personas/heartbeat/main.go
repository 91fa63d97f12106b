// Command heartbeat is a demo persona: it prints a numbered heartbeat every second, so that a
// neighbour's misbehaviour (a fork bomb, a memory hog) can be seen not to stop it.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	host, _ := os.Hostname()
	for n := 1; ; n++ {
		fmt.Printf("heartbeat %d from %s pid %d\n", n, host, os.Getpid())
		time.Sleep(time.Second)
	}
}
