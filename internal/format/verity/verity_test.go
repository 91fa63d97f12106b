package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"
)

// TestGoldenRoot pins the tree of 1000 zero blocks as `veritysetup format
// --salt 5370...6c74 --uuid 00000000-0000-4000-8000-000000000001` made it, so a
// change of output shows even where veritysetup is not installed.
func TestGoldenRoot(t *testing.T) {
	p := Params{
		Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 1000,
		Salt: []byte("Spine-verity-golden-salt"),
		UUID: [16]byte{6: 0x40, 8: 0x80, 15: 1},
	}
	area, root, err := Build(bytes.NewReader(make([]byte, 1000*4096)), p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(root), "276895b034aa3ef8d942df70da77e8224ccc00de2780a18bc07a5cb798b9ba03"; got != want {
		t.Errorf("root = %s, want %s", got, want)
	}
	sum := sha256.Sum256(area)
	if got, want := hex.EncodeToString(sum[:]), "bcb566b644533bc271677007d16170ad2ee2378d5e35d060313d2bec0d8d02a7"; got != want || len(area) != 40960 {
		t.Errorf("hash area: %d bytes, sha256 %s; want 40960 bytes, sha256 %s", len(area), got, want)
	}
}

func TestBuildIndependentOfWorkers(t *testing.T) {
	for _, p := range []Params{
		{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 5000, Salt: testSalt, UUID: testUUID},
		{Algorithm: "sha256", DataBlockSize: 512, HashBlockSize: 512, DataBlocks: 20000, Salt: testSalt, UUID: testUUID},
	} {
		data := randomData(int(p.DataBlocks)*int(p.DataBlockSize), 3)
		wantArea, wantRoot, err := Build(bytes.NewReader(data), p, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, workers := range []int{1, 2, 7, 0} {
			area, root, err := Build(bytes.NewReader(data), p, workers)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(area, wantArea) || !bytes.Equal(root, wantRoot) {
				t.Errorf("%d-byte blocks, %d workers: output differs from 1 worker: %s", p.DataBlockSize, workers, firstDiff(area, wantArea))
			}
		}
	}
}

// tree is a small tree kept in memory for the corruption tests.
type tree struct {
	p    Params
	data []byte
	area []byte
	root []byte
}

func newTree(t *testing.T, p Params) tree {
	t.Helper()
	data := randomData(int(p.DataBlocks)*int(p.DataBlockSize), p.DataBlocks)
	area, root, err := Build(bytes.NewReader(data), p, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tree{p: p, data: data, area: area, root: root}
}

func (tr tree) verify(workers int) error {
	return Verify(bytes.NewReader(tr.data), bytes.NewReader(tr.area), tr.p, tr.root, workers)
}

// hashBlockOffset returns the byte offset of block b of tree level `level`.
func (tr tree) hashBlockOffset(level int, b uint64) int {
	l := newLayout(tr.p)
	return int(l.start[level]+b) * int(tr.p.HashBlockSize)
}

func TestVerify(t *testing.T) {
	// 300 blocks of 512 bytes, 16 digests per hash block: level 0 has 19
	// blocks, level 1 has 2, level 2 (the top) has 1.
	p := Params{Algorithm: "sha256", DataBlockSize: 512, HashBlockSize: 512, DataBlocks: 300, Salt: testSalt, UUID: testUUID}
	if l := newLayout(p); l.levels != 3 || l.blocks[0] != 19 || l.blocks[1] != 2 || l.blocks[2] != 1 {
		t.Fatalf("unexpected layout %+v", l)
	}
	cases := []struct {
		name   string
		damage func(tr *tree)
		want   *CorruptionError // nil: intact
	}{
		{"intact", func(*tree) {}, nil},
		{"data block 0", func(tr *tree) { tr.data[0] ^= 1 }, &CorruptionError{Area: "data", Block: 0}},
		{"data block 123", func(tr *tree) { tr.data[123*512+77] ^= 0x80 }, &CorruptionError{Area: "data", Block: 123}},
		{"last data block", func(tr *tree) { tr.data[len(tr.data)-1]++ }, &CorruptionError{Area: "data", Block: 299}},
		{"two data blocks, lowest wins", func(tr *tree) { tr.data[250*512] ^= 1; tr.data[40*512] ^= 1 }, &CorruptionError{Area: "data", Block: 40}},
		{"level 0 hash block 7", func(tr *tree) { tr.area[tr.hashBlockOffset(0, 7)+5] ^= 1 }, &CorruptionError{Area: "hash", Level: 0, Block: 7}},
		{"level 0 padding", func(tr *tree) { tr.area[tr.hashBlockOffset(0, 18)+511] = 1 }, &CorruptionError{Area: "hash", Level: 0, Block: 18}},
		{"level 1 hash block 1", func(tr *tree) { tr.area[tr.hashBlockOffset(1, 1)] ^= 1 }, &CorruptionError{Area: "hash", Level: 1, Block: 1}},
		{"top block", func(tr *tree) { tr.area[tr.hashBlockOffset(2, 0)+3] ^= 1 }, &CorruptionError{Area: "root"}},
		{"wrong root", func(tr *tree) { tr.root[31] ^= 1 }, &CorruptionError{Area: "root"}},
		{"superblock magic", func(tr *tree) { tr.area[0] = 'V' }, &CorruptionError{Area: "superblock"}},
		{"superblock salt", func(tr *tree) { tr.area[offSalt+3] ^= 1 }, &CorruptionError{Area: "superblock"}},
		{"superblock data blocks", func(tr *tree) { tr.area[offDataBlocks] ^= 1 }, &CorruptionError{Area: "superblock"}},
		{"superblock uuid", func(tr *tree) { tr.area[offUUID] ^= 1 }, &CorruptionError{Area: "superblock"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newTree(t, p)
			c.damage(&tr)
			for _, workers := range []int{1, 3} {
				err := tr.verify(workers)
				if c.want == nil {
					if err != nil {
						t.Fatalf("Verify of intact input: %v", err)
					}
					continue
				}
				var ce *CorruptionError
				if !errors.As(err, &ce) {
					t.Fatalf("%d workers: got %v, want *CorruptionError", workers, err)
				}
				if ce.Area != c.want.Area || ce.Level != c.want.Level || ce.Block != c.want.Block {
					t.Errorf("%d workers: got %+v (%v), want area %s level %d block %d", workers, ce, ce, c.want.Area, c.want.Level, c.want.Block)
				}
			}
		})
	}
}

func TestVerifyMessages(t *testing.T) {
	p := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 2000, Salt: testSalt, UUID: testUUID}
	tr := newTree(t, p)
	tr.data[1234*4096+100] ^= 1
	err := tr.verify(0)
	if want := "verity: data block 1234 does not match its hash"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	// The only hash block after the superblock is the top one, padding included.
	tr = newTree(t, p)
	tr.area[4096-1] = 1
	var ce *CorruptionError
	if err := tr.verify(0); !errors.As(err, &ce) || ce.Area != "superblock" {
		t.Errorf("non-zero superblock padding: got %v", err)
	}
}

func TestVerifyOneBlock(t *testing.T) {
	p := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 1, Salt: testSalt, UUID: testUUID}
	tr := newTree(t, p)
	if err := tr.verify(0); err != nil {
		t.Fatal(err)
	}
	// With no tree levels the data block hashes straight to the root.
	want := sha256.Sum256(append(bytes.Clone(testSalt), tr.data...))
	if !bytes.Equal(tr.root, want[:]) {
		t.Errorf("root %x, want sha256(salt || block) %x", tr.root, want)
	}
	tr.data[4095] ^= 1
	var ce *CorruptionError
	if err := tr.verify(0); !errors.As(err, &ce) || ce.Area != "root" {
		t.Errorf("damaged single block: got %v", err)
	}
}

func TestShortInput(t *testing.T) {
	p := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 700, Salt: testSalt, UUID: testUUID}
	tr := newTree(t, p)
	short := bytes.NewReader(tr.data[:len(tr.data)-1])
	if _, _, err := Build(short, p, 2); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Build of short data: got %v, want io.ErrUnexpectedEOF", err)
	}
	err := Verify(short, bytes.NewReader(tr.area), p, tr.root, 2)
	var ce *CorruptionError
	if !errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ce) {
		t.Errorf("Verify of short data: got %v, want io.ErrUnexpectedEOF", err)
	}
	if err := Verify(bytes.NewReader(tr.data), bytes.NewReader(tr.area[:len(tr.area)-1]), p, tr.root, 2); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Verify of short hash area: got %v, want io.ErrUnexpectedEOF", err)
	}
	if err := Verify(bytes.NewReader(tr.data), bytes.NewReader(tr.area), p, tr.root[:31], 2); !errors.Is(err, ErrInvalidParams) {
		t.Errorf("Verify with a 31-byte root: got %v, want ErrInvalidParams", err)
	}
}

func TestValidate(t *testing.T) {
	good := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 1, Salt: testSalt}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid params: %v", err)
	}
	cases := []struct {
		name   string
		modify func(p *Params)
		want   error
	}{
		{"sha1", func(p *Params) { p.Algorithm = "sha1" }, ErrUnsupportedAlgorithm},
		{"no algorithm", func(p *Params) { p.Algorithm = "" }, ErrUnsupportedAlgorithm},
		{"SHA256 upper case", func(p *Params) { p.Algorithm = "SHA256" }, ErrUnsupportedAlgorithm},
		{"data block 256", func(p *Params) { p.DataBlockSize = 256 }, ErrInvalidParams},
		{"data block 3000", func(p *Params) { p.DataBlockSize = 3000 }, ErrInvalidParams},
		{"hash block 1 MiB", func(p *Params) { p.HashBlockSize = 1 << 20 }, ErrInvalidParams},
		{"hash block 0", func(p *Params) { p.HashBlockSize = 0 }, ErrInvalidParams},
		{"no data", func(p *Params) { p.DataBlocks = 0 }, ErrInvalidParams},
		{"overflow", func(p *Params) { p.DataBlocks = 1 << 60 }, ErrInvalidParams},
		{"salt 257", func(p *Params) { p.Salt = make([]byte, 257) }, ErrInvalidParams},
	}
	for _, c := range cases {
		p := good
		c.modify(&p)
		if err := p.Validate(); !errors.Is(err, c.want) {
			t.Errorf("%s: Validate = %v, want %v", c.name, err, c.want)
		}
		if HashAreaSize(p) != 0 {
			t.Errorf("%s: HashAreaSize of invalid params is not 0", c.name)
		}
		if _, _, err := Build(bytes.NewReader(nil), p, 1); !errors.Is(err, c.want) {
			t.Errorf("%s: Build = %v, want %v", c.name, err, c.want)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	p := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 16384, Salt: testSalt, UUID: testUUID}
	data := bytes.NewReader(randomData(int(p.DataBlocks)*4096, 1))
	for _, workers := range []int{1, 0} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(int64(p.DataBlocks) * 4096)
			for b.Loop() {
				if _, _, err := Build(data, p, workers); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
