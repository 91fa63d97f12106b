// Command web is a demo persona: an HTTP server that counts its visits in /data/counter, so the
// count survives the persona's replacement and the machine's reboot while nothing else does.
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	c := &counter{path: "/data/counter"}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n, err := c.next()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hello from persona %s: visit %d\n", host, n)
	})
	log.Printf("web: listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}

type counter struct {
	mu   sync.Mutex
	path string
}

// next reads, increments and durably rewrites the count (write beside, fsync, rename).
func (c *counter) next() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	b, err := os.ReadFile(c.path)
	switch {
	case err == nil:
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	case !errors.Is(err, fs.ErrNotExist):
		return 0, err
	}
	n++
	tmp := filepath.Join(filepath.Dir(c.path), ".counter.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(f, "%d\n", n); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return n, os.Rename(tmp, c.path)
}
