package persist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckPassphrase(t *testing.T) {
	for _, c := range []struct {
		p  string
		ok bool
	}{
		{"correct horse battery staple", true},
		{"ünïcödé ok", true},
		{"", false},
		{"tab\there", false},
		{"new\nline", false},
		{"del\x7f", false},
		{"\xff\xfe", false},
		{strings.Repeat("a", MaxPassphrase), true},
		{strings.Repeat("a", MaxPassphrase+1), false},
	} {
		err := CheckPassphrase([]byte(c.p))
		if (err == nil) != c.ok {
			t.Errorf("CheckPassphrase(%q) = %v, want ok=%v", c.p, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadPassphrase) {
			t.Errorf("CheckPassphrase(%q) = %v, not ErrBadPassphrase", c.p, err)
		}
	}
}

func TestParsePassphraseFile(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"secret\n", "secret", true},
		{"secret\r\n", "secret", true},
		{"secret", "secret", true},
		{"secret\n\n", "", false},
		{"two\nlines\n", "", false},
		{"\n", "", false},
		{"", "", false},
	} {
		got, err := ParsePassphraseFile([]byte(c.in))
		if (err == nil) != c.ok || string(got) != c.want {
			t.Errorf("ParsePassphraseFile(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

// fakeTerm is a console with scripted input that records what the prompt did to it.
type fakeTerm struct {
	in       io.Reader
	out      bytes.Buffer
	echoOff  bool
	discards int
	log      []string // "discard", "prompt", "read:<line>" in order
}

func (f *fakeTerm) Read(p []byte) (int, error) { return f.in.Read(p) }
func (f *fakeTerm) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(Prompt)) {
		if !f.echoOff {
			return 0, errors.New("prompt shown with echo on")
		}
		f.log = append(f.log, "prompt")
	}
	return f.out.Write(p)
}
func (f *fakeTerm) EchoOff() error {
	f.echoOff = true
	return nil
}
func (f *fakeTerm) Discard() error {
	f.discards++
	f.log = append(f.log, "discard")
	return nil
}

// fakeUnlocker accepts one passphrase and keeps every slice it was given, to check the wiping.
type fakeUnlocker struct {
	right string
	tries []string
	seen  [][]byte
	fail  error // returned instead of a verdict, if set
}

func (u *fakeUnlocker) try(p []byte) error {
	u.tries = append(u.tries, string(p))
	u.seen = append(u.seen, p)
	if u.fail != nil {
		return u.fail
	}
	if string(p) != u.right {
		return fmt.Errorf("keyslot 0: %w", ErrWrongPassphrase)
	}
	return nil
}

func TestAsk(t *testing.T) {
	for _, c := range []struct {
		name      string
		input     string
		attempts  int
		fail      error
		wantErr   error
		wantTries []string
		wantWrong int
	}{
		{"right", "hunter2\n", 3, nil, nil, []string{"hunter2"}, 0},
		{"carriage return", "hunter2\r\n", 3, nil, nil, []string{"hunter2"}, 0},
		{"typo then right", "hunter3\nhunter2\n", 3, nil, nil, []string{"hunter3", "hunter2"}, 1},
		{"three wrong", "a\nb\nc\nhunter2\n", 3, nil, ErrTooManyAttempts, []string{"a", "b", "c"}, 3},
		{"one attempt", "a\nhunter2\n", 1, nil, ErrTooManyAttempts, []string{"a"}, 1},
		// Empty lines and unusable ones cost an attempt but no key derivation.
		{"empty lines", "\n\t\nhunter2\n", 3, nil, nil, []string{"hunter2"}, 2},
		{"too long", strings.Repeat("x", 3*MaxPassphrase) + "\nhunter2\n", 3, nil, nil, []string{"hunter2"}, 1},
		// A console that only ever says end-of-file burns the attempts instead of looping.
		{"eof", "", 3, nil, ErrTooManyAttempts, nil, 3},
		{"unlock error stops", "hunter2\nhunter2\n", 3, errors.New("device gone"), nil, []string{"hunter2"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			term := &fakeTerm{in: strings.NewReader(c.input)}
			u := &fakeUnlocker{right: "hunter2", fail: c.fail}
			err := Ask(term, c.attempts, u.try)
			switch {
			case c.fail != nil:
				if err != c.fail {
					t.Fatalf("Ask = %v, want the unlocker's error", err)
				}
			case c.wantErr != nil:
				var ae *AttemptsError
				if !errors.Is(err, c.wantErr) || !errors.As(err, &ae) || ae.Attempts != c.attempts {
					t.Fatalf("Ask = %v, want %v after %d attempts", err, c.wantErr, c.attempts)
				}
			case err != nil:
				t.Fatalf("Ask = %v", err)
			}
			if strings.Join(u.tries, "|") != strings.Join(c.wantTries, "|") {
				t.Errorf("tried %q, want %q", u.tries, c.wantTries)
			}
			for i, p := range u.seen {
				if !bytes.Equal(p, make([]byte, len(p))) {
					t.Errorf("passphrase of try %d not wiped: %q", i, p)
				}
			}
			out := term.out.String()
			if n := strings.Count(out, WrongLine); n != c.wantWrong {
				t.Errorf("%q printed %d times, want %d:\n%s", WrongLine, n, c.wantWrong, out)
			}
			prompts := strings.Count(out, Prompt)
			if prompts == 0 || prompts > c.attempts {
				t.Errorf("%d prompts for %d attempts", prompts, c.attempts)
			}
			if !term.echoOff {
				t.Errorf("echo is back on after the prompt: it must stay off for the whole boot")
			}
			for i, l := range term.log {
				if l == "prompt" && (i == 0 || term.log[i-1] != "discard") {
					t.Errorf("prompt %d not preceded by discarding old input: %v", i, term.log)
				}
			}
			if strings.Contains(out, "hunter") {
				t.Errorf("the passphrase reached the console output:\n%s", out)
			}
		})
	}
}

func TestAskPromptCount(t *testing.T) {
	term := &fakeTerm{in: strings.NewReader("a\nb\nc\n")}
	u := &fakeUnlocker{right: "z"}
	if err := Ask(term, 3, u.try); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("Ask = %v", err)
	}
	var want string
	for i := 1; i <= 3; i++ {
		want += fmt.Sprintf("%s \n%s\nbay0: event=persist-wrong attempt=%d\n", Prompt, WrongLine, i)
	}
	if term.out.String() != want {
		t.Errorf("console:\n%q\nwant\n%q", term.out.String(), want)
	}
}

func TestReadLineStopsAtNewline(t *testing.T) {
	r := strings.NewReader("first\nsecond\n")
	buf := make([]byte, 16)
	n, err := readLine(r, buf)
	if err != nil || string(buf[:n]) != "first" {
		t.Fatalf("readLine = %q, %v", buf[:n], err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "second\n" {
		t.Errorf("readLine consumed past its line: rest %q", rest)
	}
}

func TestReadPassphrase(t *testing.T) {
	p, err := ReadPassphrase(strings.NewReader("s3cret\n"))
	if err != nil || string(p) != "s3cret" {
		t.Fatalf("ReadPassphrase = %q, %v", p, err)
	}
	if _, err := ReadPassphrase(strings.NewReader("\n")); !errors.Is(err, ErrBadPassphrase) {
		t.Errorf("empty line: %v", err)
	}
	if _, err := ReadPassphrase(strings.NewReader(strings.Repeat("y", 600) + "\n")); !errors.Is(err, ErrBadPassphrase) {
		t.Errorf("long line: %v", err)
	}
}

const sampleMountinfo = `22 1 0:20 / / ro,relatime shared:1 - squashfs /dev/dm-0 ro
23 22 0:5 / /dev rw,nosuid,noexec shared:2 - devtmpfs devtmpfs rw,size=1k
40 22 253:1 / /persist rw,nosuid,nodev,noexec,relatime shared:9 - ext4 /dev/mapper/persist rw
41 22 253:1 / /with\040space rw,relatime - ext4 /dev/dm-1 rw
`

func TestFindMount(t *testing.T) {
	e, err := FindMount(strings.NewReader(sampleMountinfo), "/persist")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Secure() || e.FSType != "ext4" || e.Source != "/dev/mapper/persist" || !e.Has("rw") || e.Has("ro") {
		t.Errorf("entry %+v", e)
	}
	e, err = FindMount(strings.NewReader(sampleMountinfo), "/with space")
	if err != nil || e.Secure() {
		t.Errorf("escaped mount point: %+v, %v", e, err)
	}
	if _, err := FindMount(strings.NewReader(sampleMountinfo), "/data"); !errors.Is(err, ErrNotMounted) {
		t.Errorf("missing mount: %v", err)
	}
	// The topmost mount wins: a later plain mount over /persist is not secure.
	over := sampleMountinfo + "50 40 0:30 / /persist rw,relatime - tmpfs tmpfs rw\n"
	if e, err := FindMount(strings.NewReader(over), "/persist"); err != nil || e.Secure() || e.FSType != "tmpfs" {
		t.Errorf("overmounted: %+v, %v", e, err)
	}
}

func TestCountBoot(t *testing.T) {
	dir := t.TempDir()
	copies := bootCopies(dir)
	inodes := map[string]uint64{}
	for want := uint64(1); want <= 5; want++ {
		n, err := CountBoot(dir)
		if err != nil || n != want {
			t.Fatalf("CountBoot = %d, %v; want %d", n, err, want)
		}
		// Once both copies exist, a boot rewrites one in place: same inode, same size.
		for _, p := range copies {
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				if want >= 2 {
					t.Fatalf("boot %d: %v", want, err)
				}
				continue
			}
			if st.Size != bootCopySize {
				t.Errorf("%s is %d bytes, want %d", p, st.Size, bootCopySize)
			}
			if old, ok := inodes[p]; ok && old != st.Ino {
				t.Errorf("boot %d: %s was replaced (inode %d, was %d): counting must not allocate", want, p, st.Ino, old)
			}
			inodes[p] = st.Ino
		}
	}
	// A torn copy (a power cut in its write) leaves the count to the other one.
	if err := os.WriteFile(copies[0], []byte(bootHeader+"00"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := CountBoot(dir); err != nil || n != 5 {
		t.Fatalf("after a torn copy: %d, %v; want 5 (the count from the intact copy, plus one)", n, err)
	}
	if n, err := CountBoot(dir); err != nil || n != 6 {
		t.Fatalf("next boot: %d, %v", n, err)
	}
	for _, p := range copies {
		if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := CountBoot(dir); err == nil {
		t.Error("a garbled counter was silently reset")
	}
	// An old counter (one copy, unpadded) goes on counting.
	old := t.TempDir()
	if err := os.WriteFile(filepath.Join(old, BootFile), []byte(bootHeader+"41\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := CountBoot(old); err != nil || n != 42 {
		t.Errorf("old counter: %d, %v", n, err)
	}
	// A symlink is never followed.
	sym := t.TempDir()
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, FormatBootCount(7), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(sym, BootFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := CountBoot(sym); err == nil {
		t.Error("CountBoot followed a symlink")
	}
}

func TestParseBootCount(t *testing.T) {
	for _, s := range []string{"", bootHeader, bootHeader + "\n", bootHeader + "x\n", bootHeader + "1", bootHeader + "-1\n", bootHeader + "99999999999999999999999\n", "x" + string(FormatBootCount(3))} {
		if n, err := ParseBootCount([]byte(s)); err == nil {
			t.Errorf("ParseBootCount(%q) = %d, want an error", s, n)
		}
	}
	if n, err := ParseBootCount(FormatBootCount(42)); err != nil || n != 42 {
		t.Errorf("round trip: %d, %v", n, err)
	}
}

func FuzzParseBootCount(f *testing.F) {
	f.Add(FormatBootCount(1))
	f.Add([]byte(bootHeader + "18446744073709551615\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseBootCount(b)
		if err != nil {
			return
		}
		m, err := ParseBootCount(FormatBootCount(n))
		if err != nil || m != n {
			t.Fatalf("round trip of %d: %d, %v", n, m, err)
		}
	})
}
