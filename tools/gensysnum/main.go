// Command gensysnum writes the x86-64 system call table that spine build's policy checks and
// bay0's seccomp compiler use (package internal/format/syscalls), from the SYS_* constants of the
// golang.org/x/sys/unix version this module requires. `go generate ./internal/format/syscalls`
// runs it; a test in this command fails when the table is stale.
package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	out := "table_amd64.go"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	src, err := generate()
	if err == nil {
		err = os.WriteFile(out, src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gensysnum:", err)
		os.Exit(1)
	}
}

// generate renders the table from the module's own copy of x/sys.
func generate() ([]byte, error) {
	info, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "golang.org/x/sys").Output()
	if err != nil {
		return nil, fmt.Errorf("locate golang.org/x/sys: %w", err)
	}
	dir, version, ok := strings.Cut(strings.TrimSpace(string(info)), " ")
	if !ok || dir == "" {
		return nil, fmt.Errorf("locate golang.org/x/sys: unexpected %q (run go mod download)", info)
	}
	table, err := readTable(filepath.Join(dir, "unix", "zsysnum_linux_amd64.go"))
	if err != nil {
		return nil, err
	}
	return render(table, version)
}

type syscall struct {
	name string
	nr   uint64
}

// readTable collects every SYS_NAME = N constant of the file, named as the kernel names the call.
func readTable(path string) ([]syscall, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	var out []syscall
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, id := range vs.Names {
				name, ok := strings.CutPrefix(id.Name, "SYS_")
				if !ok || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					return nil, fmt.Errorf("%s: %s is not a number", path, id.Name)
				}
				nr, err := strconv.ParseUint(lit.Value, 0, 32)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w", path, id.Name, err)
				}
				out = append(out, syscall{strings.ToLower(name), nr})
			}
		}
	}
	if len(out) < 300 {
		return nil, fmt.Errorf("%s: only %d system calls found", path, len(out))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].nr < out[j].nr })
	return out, nil
}

func render(table []syscall, version string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated from golang.org/x/sys/unix zsysnum_linux_amd64.go (%s); DO NOT EDIT.\n\n", version)
	b.WriteString("package syscalls\n\n")
	b.WriteString("// table maps every x86-64 system call name to its number. It is read-only.\n")
	b.WriteString("var table = map[string]uint32{\n")
	for _, s := range table {
		fmt.Fprintf(&b, "\t%q: %d,\n", s.name, s.nr)
	}
	b.WriteString("}\n")
	return format.Source(b.Bytes())
}
