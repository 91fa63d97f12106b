package vm

import (
	"strings"
	"testing"
)

// TestQuietConsole keeps bay0's and the personas' lines, whole, however the bytes are split,
// passes bay0's prompt before its line ends, and drops the firmware's and the kernel's lines.
func TestQuietConsole(t *testing.T) {
	in := "BdsDxe: loading Boot0001\r\n[    0.000000] Linux version 6.1\n" +
		"bay0: stage1: start (stage0)\n" +
		"persona web: listening\n" +
		"per-cpu areas\n" +
		"bay0: enter passphrase for /persist:"
	want := "bay0: stage1: start (stage0)\npersona web: listening\nbay0: enter passphrase for /persist:"
	for _, size := range []int{1, 2, 3, 7, len(in)} {
		var out strings.Builder
		q := QuietConsole(&out)
		for i := 0; i < len(in); i += size {
			end := min(i+size, len(in))
			if n, err := q.Write([]byte(in[i:end])); err != nil || n != end-i {
				t.Fatalf("Write: %d, %v", n, err)
			}
		}
		if out.String() != want {
			t.Errorf("chunks of %d: got\n%q\nwant\n%q", size, out.String(), want)
		}
	}
}
