// Command pkgmap writes the README's package map from the code: every package of the module,
// grouped by where it runs (the machine's PID 1, the on-disk formats both sides share, the
// operator's host), each with the first sentence of its doc comment. With -check it only
// verifies that README.md's map is current.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const (
	begin = "<!-- packages:begin -->\n"
	end   = "<!-- packages:end -->"
)

// groups orders the map; a package goes into the first group whose prefix it has.
var groups = []struct{ prefix, title string }{
	{"cmd/", "Commands (thin: flags and exit codes)"},
	{"internal/bay0/", "The machine: what runs as PID 1 (`go list -deps ./cmd/bay0` stays inside these and internal/format)"},
	{"internal/format/", "On-disk and on-the-wire formats, shared by the machine and the host"},
	{"internal/host/", "The operator's host: building, provisioning, QEMU, the CLI"},
	{"personas/", "Test and demo personas"},
	{"bench", "Benchmarks"},
	{"tools/", "Build and report tools"},
	{"e2e", "End-to-end suite (real boots under QEMU)"},
}

func main() {
	check := flag.String("check", "", "verify the map in this README instead of printing it")
	write := flag.String("write", "", "rewrite the map in this README")
	flag.Parse()
	if err := run(*check, *write); err != nil {
		fmt.Fprintln(os.Stderr, "pkgmap:", err)
		os.Exit(1)
	}
}

func run(check, write string) error {
	m, err := render()
	if err != nil {
		return err
	}
	switch {
	case check != "":
		b, err := os.ReadFile(check)
		if err != nil {
			return err
		}
		_, rest, ok := strings.Cut(string(b), begin)
		got, _, ok2 := strings.Cut(rest, end)
		if !ok || !ok2 {
			return fmt.Errorf("%s has no %q ... %q section", check, strings.TrimSpace(begin), end)
		}
		if got != m {
			return fmt.Errorf("the package map in %s is stale: run scripts/readme-cli.sh", check)
		}
		return nil
	case write != "":
		b, err := os.ReadFile(write)
		if err != nil {
			return err
		}
		head, rest, ok := strings.Cut(string(b), begin)
		_, tail, ok2 := strings.Cut(rest, end)
		if !ok || !ok2 {
			return fmt.Errorf("%s has no %q ... %q section", write, strings.TrimSpace(begin), end)
		}
		return os.WriteFile(write, []byte(head+begin+m+end+tail), 0o644)
	default:
		_, err := io.WriteString(os.Stdout, m)
		return err
	}
}

type pkg struct {
	ImportPath, Dir, Doc string
	GoFiles, TestGoFiles []string
}

// docComment reads the package's doc comment from its files (go list's Doc is only the
// synopsis, which stops at the first period); a package of tests only has it in a test file.
func docComment(p pkg) (string, error) {
	for _, name := range append(p.GoFiles, p.TestGoFiles...) {
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return "", err
		}
		if f.Doc != nil {
			return f.Doc.Text(), nil
		}
	}
	return "", nil
}

func render() (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	list := exec.Command("go", "list", "-json=ImportPath,Dir,GoFiles,TestGoFiles", "-tags", "e2e", "./...")
	list.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	out, err := list.Output()
	if err != nil {
		return "", fmt.Errorf("go list: %w", err)
	}
	const module = "alpinespine.org/spine/"
	byGroup := make([][]pkg, len(groups))
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			return "", err
		}
		if p.Doc, err = docComment(p); err != nil {
			return "", err
		}
		rel := strings.TrimPrefix(p.ImportPath, module)
		p.ImportPath = rel
		placed := false
		for i, g := range groups {
			if strings.HasPrefix(rel, g.prefix) {
				byGroup[i] = append(byGroup[i], p)
				placed = true
				break
			}
		}
		if !placed {
			return "", fmt.Errorf("package %s belongs to no group of the map", rel)
		}
	}
	var b strings.Builder
	for i, g := range groups {
		if len(byGroup[i]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n**%s**\n\n", g.title)
		for _, p := range byGroup[i] {
			doc := firstSentence(p.Doc)
			if doc == "" {
				return "", fmt.Errorf("package %s has no doc comment", p.ImportPath)
			}
			fmt.Fprintf(&b, "- `%s`: %s\n", p.ImportPath, doc)
		}
	}
	b.WriteString("\n")
	return b.String(), nil
}

// firstSentence is the doc comment's first sentence, without the "Package x" or "Command x".
func firstSentence(doc string) string {
	doc, _, _ = strings.Cut(doc, "\n\n")
	doc = strings.TrimSuffix(strings.Join(strings.Fields(doc), " "), ":")
	for i := 0; i+1 < len(doc); i++ {
		// A sentence ends at ". " outside backquotes ("`skopeo copy ... oci:DIR`" goes on).
		if doc[i] == '.' && doc[i+1] == ' ' && strings.Count(doc[:i], "`")%2 == 0 {
			doc = doc[:i+1]
			break
		}
	}
	for _, lead := range []string{"Package ", "Command "} {
		if rest, ok := strings.CutPrefix(doc, lead); ok {
			if _, after, ok := strings.Cut(rest, " "); ok {
				doc = after
			}
		}
	}
	return doc
}
