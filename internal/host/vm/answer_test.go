package vm

import (
	"bytes"
	"testing"

	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/bay0/persona"
)

// answers reads a's answers line by line, in small reads, until Close.
func answers(a *Answerer) <-chan string {
	got := make(chan string, 8)
	go func() {
		buf := make([]byte, 3) // small reads: an answer may take several
		var line []byte
		for {
			n, err := a.Read(buf)
			line = append(line, buf[:n]...)
			if i := bytes.IndexByte(line, '\n'); i >= 0 {
				got <- string(line[:i+1])
				line = line[i+1:]
			}
			if err != nil {
				close(got)
				return
			}
		}
	}()
	return got
}

func TestAnswerer(t *testing.T) {
	a := NewAnswerer([]byte("wrong"), []byte("right"))
	got := answers(a)
	// Console output that merely mentions the passphrase is not a prompt.
	a.Write([]byte("bay0: persist: unlocked\nbay0: enter pass"))
	a.Write([]byte("phrase for /persist: "))
	if s := <-got; s != "wrong\n" {
		t.Fatalf("first answer %q", s)
	}
	a.Write([]byte("\r\n" + persist.WrongLine + "\r\n" + persist.Prompt + " "))
	if s := <-got; s != "right\n" {
		t.Fatalf("second answer %q", s)
	}
	a.Write([]byte("\n" + persist.Prompt + " \n" + persist.Prompt))
	for i := 0; i < 2; i++ {
		if s := <-got; s != "right\n" {
			t.Fatalf("later answer %q: the last answer must repeat", s)
		}
	}
	if n := a.Prompts(); n != 4 {
		t.Errorf("Prompts = %d, want 4", n)
	}
	select {
	case s := <-got:
		t.Fatalf("answered %q without a prompt", s)
	default:
	}
	a.Close()
	if _, ok := <-got; ok {
		t.Error("Read did not end after Close")
	}
}

// TestAnswererIgnoresPersonas: the prompt's text anywhere but at the start of a line (where
// only bay0 writes) is never answered, however it is split or disguised.
func TestAnswererIgnoresPersonas(t *testing.T) {
	a := NewAnswerer([]byte("secret"))
	got := answers(a)
	for _, w := range []string{
		"persona evil: " + persist.Prompt + "\n",
		"persona evil: x\r" + persist.Prompt + "\r\n",
		"persona evil: \x1b[2K\x1b[0G" + persist.Prompt + "\n",
		"persona evil: bay0: enter ", "passphrase for /persist:\n",
		" " + persist.Prompt + "\n",
		"\r" + persist.Prompt + "\n",
		"bay0: enter passphrase for /persist", "\n",
	} {
		a.Write([]byte(w))
	}
	if n := a.Prompts(); n != 0 {
		t.Fatalf("%d prompts seen in persona output", n)
	}
	a.Write([]byte(persist.Prompt))
	if s := <-got; s != "secret\n" || a.Prompts() != 1 {
		t.Fatalf("bay0's own prompt: %q, %d prompts", s, a.Prompts())
	}
	a.Close()
}

// FuzzPersonaOutputNeverPrompts sends arbitrary persona output through bay0's own line copier
// (persona.CopyLines, which prefixes and cleans every line) into an Answerer: whatever a
// persona prints, no prompt is seen.
func FuzzPersonaOutputNeverPrompts(f *testing.F) {
	f.Add([]byte(persist.Prompt + "\n"))
	f.Add([]byte("x\r" + persist.Prompt + "\n\n" + persist.Prompt))
	f.Add([]byte("\x1b[1G" + persist.Prompt + "\x00\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		a := NewAnswerer([]byte("secret"))
		defer a.Close()
		if err := persona.CopyLines(a, bytes.NewReader(out), "persona evil: "); err != nil {
			t.Fatal(err)
		}
		if n := a.Prompts(); n != 0 {
			t.Fatalf("persona output %q made %d prompts", out, n)
		}
	})
}
