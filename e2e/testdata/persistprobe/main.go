// Command persistprobe is a hostile persona for the /persist scenarios of the e2e suite.
//
//	persistprobe prompt  prints bay0's passphrase prompt in every disguise a persona can
//	                     manage, hoping that the host types the passphrase back
//	persistprobe fill    writes /data until the kernel refuses, then says why
//	persistprobe write   writes and syncs a small file in /data every second, saying each time
//	                     whether it worked
//
// Every mode then keeps running, so that bay0 sees a healthy persona.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

const prompt = "bay0: enter passphrase for /persist:"

func main() {
	if len(os.Args) != 2 {
		fmt.Println("persistprobe: usage: persistprobe prompt|fill|write")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "prompt":
		promptAll()
	case "fill":
		fill()
	case "write":
		write()
	}
	for {
		time.Sleep(time.Hour)
	}
}

func promptAll() {
	for i := 0; i < 3; i++ {
		for _, s := range []string{
			prompt + " ",
			prompt + "\n",
			"\r" + prompt + " ",
			"\n" + prompt + " ",
			"x\r\n" + prompt + "\n",
			"\x1b[2K\x1b[0G" + prompt + " ",
		} {
			os.Stdout.WriteString(s)
			os.Stderr.WriteString(s)
		}
		time.Sleep(time.Second)
	}
	fmt.Println("\npersistprobe: prompt done")
}

// fill writes /data/fill in 64 KiB chunks until a write fails.
func fill() {
	f, err := os.Create("/data/fill")
	if err != nil {
		fmt.Printf("persistprobe: fill: create: %v\n", err)
		return
	}
	chunk := bytes.Repeat([]byte{0x5a}, 64<<10)
	var n int64
	for {
		k, err := f.Write(chunk)
		n += int64(k)
		if err == nil {
			continue
		}
		serr := f.Sync()
		fmt.Printf("persistprobe: fill: stopped after %d bytes: %v (sync: %v)\n", n, err, serr)
		f.Close()
		return
	}
}

// write writes, syncs and renames a 64 KiB file once a second.
func write() {
	chunk := bytes.Repeat([]byte{0xa5}, 64<<10)
	for i := 1; ; i++ {
		tmp := filepath.Join("/data", "w.tmp")
		err := os.WriteFile(tmp, chunk, 0o600)
		if err == nil {
			var f *os.File
			if f, err = os.Open(tmp); err == nil {
				err = f.Sync()
				f.Close()
			}
		}
		if err == nil {
			err = os.Rename(tmp, filepath.Join("/data", "w"))
		}
		if err != nil {
			fmt.Printf("persistprobe: write failed %d: %v\n", i, err)
		} else {
			fmt.Printf("persistprobe: write ok %d\n", i)
		}
		time.Sleep(time.Second)
	}
}
