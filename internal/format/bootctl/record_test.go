package bootctl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// sampleRecord uses every field.
func sampleRecord() Record {
	return Record{
		Seq:        0x0102030405060708,
		Primary:    1,
		MinVersion: 41,
		Slots: [NumSlots]Slot{
			{State: Bad, Version: 41, ImageSize: 123 << 20, Reason: "verify slot a: root hash mismatch at block 7 — ä"},
			{State: Trial, TriesLeft: 1, Version: 42, ImageSize: 124 << 20, Resets: 2, ResetLimit: 5},
		},
		LastReset: "watchdog: persona web missed its window",
	}
}

func marshal(t testing.TB, r Record) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

// resum recomputes the checksum after a test changed b.
func resum(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func TestLayoutAddsUp(t *testing.T) {
	if offSlots+NumSlots*slotSize != offLastReset {
		t.Errorf("slots end at %d, last reset starts at %d", offSlots+NumSlots*slotSize, offLastReset)
	}
	if offLastReset+LastResetSize > offCRC {
		t.Errorf("last reset ends at %d, past the checksum at %d", offLastReset+LastResetSize, offCRC)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []Record{{}, sampleRecord(), Initial(&SlotInit{Version: 1, ImageSize: 5}, nil)} {
		b := marshal(t, r)
		if len(b) != RecordSize {
			t.Fatalf("MarshalBinary gives %d bytes, want %d", len(b), RecordSize)
		}
		got, err := ParseRecord(b)
		if err != nil {
			t.Fatalf("ParseRecord: %v", err)
		}
		if got != r {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

// TestRecordLayout checks the fields at their documented offsets, independently of the parser.
func TestRecordLayout(t *testing.T) {
	b := marshal(t, sampleRecord())
	le := binary.LittleEndian
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"version", uint64(le.Uint32(b[8:])), FormatVersion},
		{"incompat", uint64(le.Uint32(b[12:])), 0},
		{"seq", le.Uint64(b[16:]), 0x0102030405060708},
		{"primary", uint64(b[24]), 1},
		{"min version", le.Uint64(b[32:]), 41},
		{"slot a state", uint64(b[40]), uint64(Bad)},
		{"slot a version", le.Uint64(b[48:]), 41},
		{"slot a image size", le.Uint64(b[56:]), 123 << 20},
		{"slot b state", uint64(b[40+280]), uint64(Trial)},
		{"slot b tries", uint64(b[41+280]), 1},
		{"slot b version", le.Uint64(b[48+280:]), 42},
		{"crc32c", uint64(le.Uint32(b[4092:])), uint64(crc32.Checksum(b[:4092], crc32.MakeTable(crc32.Castagnoli)))},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if string(b[:8]) != "BAY0BOOT" {
		t.Errorf("magic %q", b[:8])
	}
	if !strings.HasPrefix(string(b[64:]), sampleRecord().Slots[0].Reason+"\x00") {
		t.Error("slot a reason is not at offset 64")
	}
	if !strings.HasPrefix(string(b[600:]), sampleRecord().LastReset+"\x00") {
		t.Error("last reset is not at offset 600")
	}
}

// TestRecordGolden pins the on-disk bytes: a change here breaks every disk in the field.
func TestRecordGolden(t *testing.T) {
	b := marshal(t, sampleRecord())
	golden := filepath.Join("testdata", "record-v1.golden")
	if *update {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Error("MarshalBinary output differs from testdata/record-v1.golden")
	}
	got, err := ParseRecord(want)
	if err != nil || got != sampleRecord() {
		t.Errorf("ParseRecord(golden) = %+v, %v", got, err)
	}
}

func TestMarshalRejects(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []struct {
		name string
		mut  func(r *Record)
		want string
	}{
		{"reason too long", func(r *Record) { r.Slots[1].Reason = long(ReasonSize + 1) }, "slot b reason"},
		{"last reset too long", func(r *Record) { r.LastReset = long(LastResetSize + 1) }, "last reset"},
		{"reason not UTF-8", func(r *Record) { r.Slots[0].Reason = "\xff" }, "slot a reason"},
		{"reason with NUL", func(r *Record) { r.Slots[0].Reason = "a\x00b" }, "slot a reason"},
		{"primary", func(r *Record) { r.Primary = 2 }, "primary"},
		{"negative primary", func(r *Record) { r.Primary = -1 }, "primary"},
		{"state", func(r *Record) { r.Slots[1].State = 4 }, "slot b state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleRecord()
			tc.mut(&r)
			_, err := r.MarshalBinary()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("MarshalBinary = %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}
	// Full-length strings fit without a terminator.
	r := sampleRecord()
	r.Slots[0].Reason = long(ReasonSize)
	r.LastReset = long(LastResetSize)
	got, err := ParseRecord(marshal(t, r))
	if err != nil || got != r {
		t.Errorf("full-length strings: %+v, %v", got, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(b []byte) []byte
		want error
	}{
		{"empty", func(b []byte) []byte { return nil }, ErrCorrupt},
		{"short", func(b []byte) []byte { return b[:RecordSize-1] }, ErrCorrupt},
		{"long", func(b []byte) []byte { return append(b, 0) }, ErrCorrupt},
		{"zeros", func(b []byte) []byte { return make([]byte, RecordSize) }, ErrBadMagic},
		{"magic", func(b []byte) []byte { b[0] = 'b'; return resum(b) }, ErrBadMagic},
		{"version 0", func(b []byte) []byte { b[offVersion] = 0; return resum(b) }, ErrUnsupported},
		{"version 2", func(b []byte) []byte { b[offVersion] = 2; return resum(b) }, ErrUnsupported},
		{"incompat flag", func(b []byte) []byte { b[offIncompat+3] = 0x80; return resum(b) }, ErrUnsupported},
		{"checksum", func(b []byte) []byte { b[offCRC] ^= 1; return b }, ErrBadChecksum},
		{"torn", func(b []byte) []byte { clear(b[2048:]); return b }, ErrBadChecksum},
		{"flipped seq", func(b []byte) []byte { b[offSeq] ^= 1; return b }, ErrBadChecksum},
		{"primary", func(b []byte) []byte { b[offPrimary] = 2; return resum(b) }, ErrCorrupt},
		{"reserved after primary", func(b []byte) []byte { b[offPrimary+1] = 1; return resum(b) }, ErrCorrupt},
		{"state", func(b []byte) []byte { b[offSlots+slotSize+slotState] = 4; return resum(b) }, ErrCorrupt},
		{"slot reserved", func(b []byte) []byte { b[offSlots+slotLimit+1] = 1; return resum(b) }, ErrCorrupt},
		{"reason not UTF-8", func(b []byte) []byte { b[offSlots+slotSize+slotReason] = 0xff; return resum(b) }, ErrCorrupt},
		{"bytes after NUL", func(b []byte) []byte { b[offSlots+slotReason+ReasonSize-1] = 'x'; return resum(b) }, ErrCorrupt},
		{"last reset after NUL", func(b []byte) []byte { b[offLastReset+LastResetSize-1] = 'x'; return resum(b) }, ErrCorrupt},
		{"reserved tail", func(b []byte) []byte { b[offCRC-1] = 1; return resum(b) }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecord(tc.mut(marshal(t, sampleRecord())))
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseRecord = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		size int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"too long", 3, "too"},
		{"a\x00b", 10, "ab"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"ää", 3, "ä"}, // never cut inside a rune
		{"abc", 0, ""},
		{"abc", -1, ""},
	} {
		got := Clip(tc.in, tc.size)
		if got != tc.want || len(got) > max(tc.size, 0) || !utf8.ValidString(got) {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.in, tc.size, got, tc.want)
		}
	}
}

func TestStrings(t *testing.T) {
	if s := State(9).String(); s != "State(9)" {
		t.Errorf("State(9) = %q", s)
	}
	for st, want := range map[State]string{Empty: "empty", Trial: "trial", Good: "good", Bad: "bad"} {
		if st.String() != want {
			t.Errorf("%d.String() = %q, want %q", st, st.String(), want)
		}
	}
	if SlotName(0) != "a" || SlotName(1) != "b" || SlotName(2) == "b" {
		t.Error("SlotName")
	}
	if Try.String() != "try" || Boot.String() != "boot" || PowerOff.String() != "poweroff" || ActionKind(0).String() == "try" {
		t.Error("ActionKind.String")
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add(marshal(f, sampleRecord()), false)
	f.Add(marshal(f, Record{}), false)
	f.Add(marshal(f, Initial(&SlotInit{Version: 1, ImageSize: 1 << 20}, &SlotInit{Version: 1, ImageSize: 1 << 20})), false)
	if golden, err := os.ReadFile(filepath.Join("testdata", "record-v1.golden")); err == nil {
		f.Add(golden, false)
	}
	torn := marshal(f, sampleRecord())
	clear(torn[1000:])
	f.Add(torn, false)
	f.Add(torn, true)
	f.Add([]byte("BAY0BOOT"), false)

	// fix recomputes the checksum so that mutations reach the field checks.
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix && len(b) == RecordSize {
			b = resum(bytes.Clone(b))
		}
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed record does not marshal: %v\n%+v", err, r)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("parse is not strict: re-encoding changes the bytes\n%+v", r)
		}
		r2, err := ParseRecord(again)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v, %v\nwant %+v", r2, err, r)
		}
	})
}
