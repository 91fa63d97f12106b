package netlink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"testing"
)

func le32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func le16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// The expected bytes are spelt out field by field from linux/netlink.h, rtnetlink.h and
// if_link.h, as `ip link add link eth1 name eth0 address 02:.. netns 42 type macvlan mode
// private` sends.
func TestNewMacvlanRequest(t *testing.T) {
	mac := [6]byte{0x02, 1, 2, 3, 4, 5}
	got, err := NewMacvlanRequest(7, Macvlan{Name: "eth0", Parent: 2, NetnsPID: 42, MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	body := cat(
		[]byte{0, 0}, le16(0), le32(0), le32(0), le32(0), // ifinfomsg
		le16(9), le16(3), []byte("eth0\x00\x00\x00\x00"), // IFLA_IFNAME, padded
		le16(10), le16(1), mac[:], []byte{0, 0}, // IFLA_ADDRESS, padded
		le16(8), le16(5), le32(2), // IFLA_LINK
		le16(8), le16(19), le32(42), // IFLA_NET_NS_PID
		le16(28), le16(18), // IFLA_LINKINFO
		le16(11), le16(1), []byte("macvlan\x00"), // IFLA_INFO_KIND, unterminated, padded
		le16(12), le16(2), // IFLA_INFO_DATA
		le16(8), le16(1), le32(1), // IFLA_MACVLAN_MODE = private
	)
	want := cat(le32(uint32(16+len(body))), le16(16), le16(0x1|0x4|0x400|0x200), le32(7), le32(0), body)
	if !bytes.Equal(got, want) {
		t.Errorf("request\n got % x\nwant % x", got, want)
	}
}

func TestNewMacvlanRequestRefuses(t *testing.T) {
	mac := [6]byte{0x02}
	for _, l := range []Macvlan{
		{Name: "", Parent: 2, NetnsPID: 1, MAC: mac},
		{Name: "a-name-far-too-long", Parent: 2, NetnsPID: 1, MAC: mac},
		{Name: "eth0", Parent: 0, NetnsPID: 1, MAC: mac},
		{Name: "eth0", Parent: 2, NetnsPID: 0, MAC: mac},
		{Name: "eth0", Parent: 2, NetnsPID: 1, MAC: [6]byte{0x03}},    // multicast
		{Name: "eth0", Parent: 2, NetnsPID: 1, MAC: [6]byte{0x00, 1}}, // globally administered
	} {
		if _, err := NewMacvlanRequest(1, l); err == nil {
			t.Errorf("%+v was accepted", l)
		}
	}
}

func TestSetUpRequest(t *testing.T) {
	got := SetUpRequest(3, 5)
	want := cat(le32(32), le16(16), le16(0x5), le32(3), le32(0),
		[]byte{0, 0}, le16(0), le32(5), le32(1), le32(1))
	if !bytes.Equal(got, want) {
		t.Errorf("request\n got % x\nwant % x", got, want)
	}
}

func TestRenameRequest(t *testing.T) {
	got, err := RenameRequest(6, 9, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	want := cat(le32(44), le16(16), le16(0x5), le32(6), le32(0),
		[]byte{0, 0}, le16(0), le32(9), le32(0), le32(0),
		le16(9), le16(3), []byte("eth0\x00\x00\x00\x00"))
	if !bytes.Equal(got, want) {
		t.Errorf("request\n got % x\nwant % x", got, want)
	}
	if _, err := RenameRequest(6, 9, "a-name-far-too-long"); err == nil {
		t.Error("a long name was accepted")
	}
}

func TestAddAddrRequest(t *testing.T) {
	got, err := AddAddrRequest(4, 2, netip.MustParsePrefix("10.0.2.15/24"))
	if err != nil {
		t.Fatal(err)
	}
	want := cat(le32(40), le16(20), le16(0x605), le32(4), le32(0),
		[]byte{2, 24, 0, 0}, le32(2),
		le16(8), le16(2), []byte{10, 0, 2, 15},
		le16(8), le16(1), []byte{10, 0, 2, 15})
	if !bytes.Equal(got, want) {
		t.Errorf("request\n got % x\nwant % x", got, want)
	}
	got, err = AddAddrRequest(4, 2, netip.MustParsePrefix("fd00::15/64"))
	if err != nil {
		t.Fatal(err)
	}
	a6 := netip.MustParseAddr("fd00::15").AsSlice()
	want = cat(le32(64), le16(20), le16(0x605), le32(4), le32(0),
		[]byte{10, 64, 2, 0}, le32(2),
		le16(20), le16(2), a6,
		le16(20), le16(1), a6)
	if !bytes.Equal(got, want) {
		t.Errorf("IPv6 request\n got % x\nwant % x", got, want)
	}
	if _, err := AddAddrRequest(4, 2, netip.MustParsePrefix("::ffff:10.0.2.15/120")); err == nil {
		t.Error("an IPv4-mapped prefix was accepted")
	}
}

func TestAddRouteRequest(t *testing.T) {
	got, err := AddRouteRequest(5, Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.2.2"), Index: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := cat(le32(44), le16(24), le16(0x605), le32(5), le32(0),
		[]byte{2, 0, 0, 0, 254, 3, 0, 1}, le32(0),
		le16(8), le16(5), []byte{10, 0, 2, 2},
		le16(8), le16(4), le32(2))
	if !bytes.Equal(got, want) {
		t.Errorf("default route\n got % x\nwant % x", got, want)
	}
	// ip route add unreachable 10.0.2.16/32
	got, err = AddRouteRequest(6, Route{Dst: netip.MustParsePrefix("10.0.2.16/32"), Unreachable: true})
	if err != nil {
		t.Fatal(err)
	}
	want = cat(le32(36), le16(24), le16(0x605), le32(6), le32(0),
		[]byte{2, 32, 0, 0, 254, 3, 0, 7}, le32(0),
		le16(8), le16(1), []byte{10, 0, 2, 16})
	if !bytes.Equal(got, want) {
		t.Errorf("unreachable route\n got % x\nwant % x", got, want)
	}
	for _, r := range []Route{
		{Dst: netip.MustParsePrefix("10.0.2.16/24"), Unreachable: true},                                           // not a network
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("fd00::1"), Index: 2},              // family
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.2.2")},                       // no link
		{Dst: netip.MustParsePrefix("10.0.2.16/32"), Gateway: netip.MustParseAddr("10.0.2.2"), Unreachable: true}, // both
	} {
		if _, err := AddRouteRequest(1, r); err == nil {
			t.Errorf("%+v was accepted", r)
		}
	}
}

func errMsg(seq uint32, code int32) []byte {
	return cat(le32(36), le16(2), le16(0), le32(seq), le32(0), le32(uint32(code)), make([]byte, 16))
}

func TestParseAck(t *testing.T) {
	other := cat(le32(20), le16(16), le16(0), le32(9), le32(0), le32(0))
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"ack", errMsg(3, 0), nil},
		{"refused", errMsg(3, -17), syscall.EEXIST},
		{"after another message", cat(other, errMsg(3, -1)), syscall.EPERM},
		{"other seq", errMsg(4, 0), ErrNoAck},
		{"empty", nil, ErrNoAck},
	}
	for _, c := range cases {
		if err := ParseAck(c.b, 3); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	for _, b := range [][]byte{
		{1, 2, 3},
		cat(le32(100), le16(2), le16(0), le32(3), le32(0)),
		cat(le32(16), le16(2), le16(0), le32(3), le32(0)),
		cat(le32(3), le16(2), le16(0), le32(3), le32(0)),
	} {
		if err := ParseAck(b, 3); err == nil || errors.Is(err, ErrNoAck) {
			t.Errorf("malformed % x: %v", b, err)
		}
	}
}

func FuzzParseAck(f *testing.F) {
	f.Add(errMsg(3, 0))
	f.Add(errMsg(3, -17))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ParseAck(b, 3) // must not panic or loop
	})
}
