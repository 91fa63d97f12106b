package seccomp

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// assembler writes a classic BPF program with named jump targets, resolved into the relative
// offsets the kernel wants by assemble. "" as a target is the next instruction.
type assembler struct {
	ins    []bpf.Instruction
	jumps  map[int][2]string // index of a bpf.JumpIf -> its true and false targets
	labels map[string]int
}

func (a *assembler) ld(off uint32) { a.ins = append(a.ins, bpf.LoadAbsolute{Off: off, Size: 4}) }

func (a *assembler) and(v uint32) {
	a.ins = append(a.ins, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: v})
}

func (a *assembler) ret(v uint32) { a.ins = append(a.ins, bpf.RetConstant{Val: v}) }

func (a *assembler) jump(cond bpf.JumpTest, val uint32, yes, no string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{yes, no}
	a.ins = append(a.ins, bpf.JumpIf{Cond: cond, Val: val})
}

func (a *assembler) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

// assemble resolves the targets. Jumps only go forward, by at most 255 instructions.
func (a *assembler) assemble() ([]bpf.Instruction, error) {
	out := append([]bpf.Instruction(nil), a.ins...)
	for i, t := range a.jumps {
		var skip [2]uint8
		for k, name := range t {
			if name == "" {
				continue
			}
			to, ok := a.labels[name]
			if !ok {
				return nil, fmt.Errorf("seccomp filter: no label %q", name)
			}
			d := to - i - 1
			if d < 0 || d > 255 {
				return nil, fmt.Errorf("seccomp filter: jump from %d to %q (%d) out of reach", i, name, to)
			}
			skip[k] = uint8(d)
		}
		j := out[i].(bpf.JumpIf)
		j.SkipTrue, j.SkipFalse = skip[0], skip[1]
		out[i] = j
	}
	return out, nil
}
