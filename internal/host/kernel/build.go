package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Build identity recorded in the kernel (the banner's "(spine@spine)").
const (
	buildUser = "spine"
	buildHost = "spine"
)

// InstalledSource finds the installed linux-source-6.1 package and its tarball.
func InstalledSource(ctx context.Context) (Source, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Status}\t${Version}", SourcePackage).Output()
	status, version, _ := strings.Cut(string(out), "\t")
	if err != nil || !strings.HasSuffix(status, " installed") || version == "" {
		return Source{}, fmt.Errorf("kernel: %s is not installed (run scripts/deps.sh, or apt-get install %s)", SourcePackage, SourcePackage)
	}
	if _, err := os.Stat(SourceTarball); err != nil {
		return Source{}, fmt.Errorf("kernel: %s is installed but its source is missing: %w", SourcePackage, err)
	}
	return Source{Version: version, Tarball: SourceTarball}, nil
}

// lock takes the exclusive lock at path, telling log when it has to wait for another builder.
// It gives up when ctx ends.
func lock(ctx context.Context, path string, log io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel: open lock: %w", err)
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("kernel: lock %s: %w", path, err)
		}
		if !told {
			logf(log, "kernel: another process is building this kernel; waiting for it")
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kernel: waiting for another build: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// build builds the kernel in the build tree work and installs the result at dir.
func build(ctx context.Context, src Source, epoch int64, opts Options, fragment []byte, s0 *Stage0, work, dir string) error {
	srcDir := filepath.Join(work, "src")
	objDir := filepath.Join(srcDir, "obj")
	out := dir + ".tmp"
	if err := os.RemoveAll(out); err != nil {
		return fmt.Errorf("kernel: clear %s: %w", out, err)
	}
	defer os.RemoveAll(out) // a no-op once renamed into place
	if err := unpack(ctx, src, work, opts.Log); err != nil {
		return err
	}
	for _, d := range []string{objDir, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("kernel: %w", err)
		}
	}
	logPath := filepath.Join(work, "build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("kernel: create build log: %w", err)
	}
	defer logFile.Close()

	start := time.Now()
	logf(opts.Log, "kernel: building %s %s with spine.config (minutes the first time; the log is %s)", SourcePackage, src.Version, logPath)
	frag := filepath.Join(work, "spine.config")
	if err := os.WriteFile(frag, fragment, 0o644); err != nil {
		return fmt.Errorf("kernel: write fragment: %w", err)
	}
	if s0 != nil {
		if err := writeSynced(filepath.Join(objDir, stage0Archive), s0.Initramfs); err != nil {
			return err
		}
	}
	env := buildEnv(os.Getenv("PATH"), epoch, opts.ExtraVersion)
	// Run in the object tree: kbuild then sees the source tree as "..".
	mk := func(args ...string) error {
		return runTool(ctx, logFile, logPath, objDir, env, "make", append([]string{"-f", "../Makefile", "ARCH=x86_64"}, args...)...)
	}
	if err := mk("KCONFIG_ALLCONFIG="+frag, "allnoconfig"); err != nil {
		return err
	}
	full, err := os.ReadFile(filepath.Join(objDir, ".config"))
	if err != nil {
		return fmt.Errorf("kernel: read generated .config: %w", err)
	}
	if err := CheckConfig(fragment, full); err != nil {
		return err
	}
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	if err := mk("-j"+strconv.Itoa(jobs), "bzImage"); err != nil {
		return err
	}
	var rel bytes.Buffer
	cmd := exec.CommandContext(ctx, "make", "-s", "-f", "../Makefile", "ARCH=x86_64", "kernelrelease")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = objDir, env, &rel, logFile
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kernel: make kernelrelease: %w (log: %s)", err, logPath)
	}
	release := strings.TrimSpace(lastLine(rel.String()))
	if release != opts.release(src) {
		return fmt.Errorf("kernel: the source builds release %q, want %q", release, opts.release(src))
	}

	outputs := []struct{ from, to string }{
		{filepath.Join(objDir, "arch/x86/boot/bzImage"), imageName},
		{filepath.Join(objDir, ".config"), configName},
	}
	// Stage 0 only ever starts through firmware: its 30 MB vmlinux would be dead weight, one per
	// set of trusted keys and bay0.
	if s0 == nil {
		outputs = append(outputs, struct{ from, to string }{filepath.Join(objDir, "vmlinux"), vmlinuxName})
	}
	for _, c := range outputs {
		if err := copySynced(c.from, filepath.Join(out, c.to)); err != nil {
			return err
		}
	}
	sum, err := fileSHA256(filepath.Join(out, imageName))
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(out, markerName), []byte(release+" "+sum+"\n")); err != nil {
		return err
	}
	if err := os.Rename(out, dir); err != nil {
		return fmt.Errorf("kernel: move the built kernel into place: %w", err)
	}
	logf(opts.Log, "kernel: built %s in %s", release, time.Since(start).Round(time.Second))
	return nil
}

// unpack makes sure work/src holds the source of src, unpacking the tarball (and dropping any
// older build tree) unless it already does. The record of what is unpacked is written last.
func unpack(ctx context.Context, src Source, work string, log io.Writer) error {
	record := filepath.Join(work, "source")
	want := SourcePackage + " " + src.Version + "\n"
	if b, err := os.ReadFile(record); err == nil && string(b) == want {
		return nil
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("kernel: clear %s: %w", work, err)
	}
	srcDir := filepath.Join(work, "src")
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	logf(log, "kernel: unpacking %s", src.Tarball)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "tar", "-xJf", src.Tarball, "-C", srcDir, "--strip-components=1")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kernel: unpack %s: %w: %s", src.Tarball, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return writeSynced(record, []byte(want))
}

// buildEnv is the whole environment of the kernel build: nothing inherited but PATH, so a
// caller's MAKEFLAGS, CC or locale cannot change the bytes, and the recorded time, user and
// host fixed. A non-empty extra is appended to the release (LOCALVERSION); an empty one is left
// out, so the plain kernel's environment is what it always was.
func buildEnv(path string, epoch int64, extra string) []string {
	env := []string{
		"PATH=" + path,
		"HOME=/nonexistent",
		"LC_ALL=C",
		"TZ=UTC",
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch, 10),
		"KBUILD_BUILD_TIMESTAMP=" + time.Unix(epoch, 0).UTC().Format(time.UnixDate),
		"KBUILD_BUILD_USER=" + buildUser,
		"KBUILD_BUILD_HOST=" + buildHost,
		"KBUILD_BUILD_VERSION=1",
		"KCONFIG_NOTIMESTAMP=1",
	}
	if extra != "" {
		env = append(env, "LOCALVERSION="+extra)
	}
	return env
}

// runTool runs a build tool with its output appended to log; on failure the error carries the
// log's last lines.
func runTool(ctx context.Context, log *os.File, logPath, dir string, env []string, tool string, args ...string) error {
	path, err := exec.LookPath(tool)
	if err != nil {
		return fmt.Errorf("kernel: %s not found (run scripts/deps.sh): %w", tool, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
	// make runs compilers under sub-makes: when ctx ends, stop the whole process group, not
	// just make, so no compiler outlives the build it belonged to.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if env != nil {
		cmd.Env = env
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kernel: %s %s: %w\n%s\n(whole log: %s)", tool, strings.Join(args, " "), err, tail(logPath, 30), logPath)
	}
	return nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// fileSHA256 returns the hex SHA-256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("kernel: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeSynced writes data to path and syncs it.
func writeSynced(path string, data []byte) error {
	return createSynced(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// copySynced copies the file at from to a new file at to and flushes it to disk, so the marker
// written after it never names data a crash could lose.
func copySynced(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("kernel: collect: %w", err)
	}
	defer in.Close()
	return createSynced(to, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// createSynced creates the file at path, fills it with write, and syncs and closes it.
func createSynced(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kernel: write %s: %w", path, err)
	}
	return nil
}

// logf prints one progress line to w, if any.
func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
