package control

import (
	"fmt"
	"os"
)

// OpenPort opens the guest end of the virtio-serial port called name for reading and writing.
//
// What the port does, observed under QEMU with the pinned kernel (TestPortInQEMU):
//   - Go registers the character device with its poller, so deadlines work on the file.
//   - While no host is connected (no client on QEMU's socket), every read returns 0 bytes at
//     once (20 reads in under a millisecond), which os.File reports as io.EOF; Serve waits
//     each such hang-up out for a moment instead of spinning or giving up.
//   - A write with no host connected does not fail: it waits for a host (the driver's
//     will_write_block is true while !host_connected) until its deadline; Serve bounds each
//     answer with WriteTimeout.
//   - A host connecting later is seen on the same open file: there is nothing to reopen.
func OpenPort(sysfs, name string) (*os.File, error) {
	dev, err := FindPort(sysfs, name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open port %q: %w", name, err)
	}
	return f, nil
}
