package launch

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/courier"
)

func sampleConfig() Config {
	return Config{Version: ConfigVersion, Name: "web", Tree: "/personas/web", Exec: []string{"/bin/web", ":8080"},
		Env: []string{"A=1"}, TmpSize: 16 << 20, RunSize: 1 << 20, Data: true, Seccomp: []byte{1, 2, 3, 4, 5, 6, 7, 8},
		Uplink: &Uplink{Address: "10.0.2.15/24", Gateway: "10.0.2.2", Device: "up42"}, User: &IDs{UID: 104, GID: 110},
		ShmSize: 8 << 20, Rlimits: []Rlimit{{Resource: 4, Value: 0}, {Resource: 7, Value: 65536}}, DNS: []string{"10.0.2.3"}}
}

func TestConfigRoundTrip(t *testing.T) {
	c := sampleConfig()
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeConfig(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip: %+v, want %+v", got, c)
	}
}

func TestEnvironmentFiles(t *testing.T) {
	if got := HostsFile("web", &Uplink{Address: "10.0.2.15/24", Address6: "fd00::15/64"}); got !=
		"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.2.15\tweb\nfd00::15\tweb\n" {
		t.Errorf("hosts with an uplink:\n%s", got)
	}
	if got := HostsFile("job", nil); !strings.HasSuffix(got, "\n127.0.1.1\tjob\n") {
		t.Errorf("hosts without an uplink:\n%s", got)
	}
	if got := ResolvConf([]string{"10.0.2.3", "fd00::3"}); got != "nameserver 10.0.2.3\nnameserver fd00::3\n" {
		t.Errorf("resolv.conf:\n%s", got)
	}
}

func TestUplinkParse(t *testing.T) {
	a, err := Uplink{Address: "10.0.2.15/24", Gateway: "10.0.2.2", Address6: "fd00::15/64", Gateway6: "fe80::1",
		Siblings: []string{"10.0.2.16", "fd00::16"}}.Parse()
	if err != nil || a.Addr.String() != "10.0.2.15/24" || a.Gw.String() != "10.0.2.2" || a.Addr6.String() != "fd00::15/64" ||
		a.Gw6.String() != "fe80::1" || fmt.Sprint(a.Siblings) != "[10.0.2.16 fd00::16]" {
		t.Errorf("Parse: %+v %v", a, err)
	}
	if a, err := (Uplink{Address: "10.0.2.15/24"}).Parse(); err != nil || a.Gw.IsValid() || a.Addr6.IsValid() {
		t.Errorf("no gateway: %+v %v", a, err)
	}
	for _, u := range []Uplink{{}, {Address: "fd00::1/64"}, {Address: "10.0.2.15/24", Gateway: "10.0.9.2"},
		{Address: "10.0.2.15/24", Gateway: "x"}, {Address: "10.0.2.15/24", Address6: "10.0.2.16/24"},
		{Address: "10.0.2.15/24", Gateway6: "fe80::1"}, {Address: "10.0.2.15/24", Siblings: []string{"10.0.2.15"}},
		{Address: "10.0.2.15/24", Siblings: []string{"nobody"}}} {
		if _, err := u.Parse(); err == nil {
			t.Errorf("%+v accepted", u)
		}
	}
}

func TestUplinkSysctls(t *testing.T) {
	off := fmt.Sprint(UplinkSysctls(false))
	for _, want := range []string{"{net/ipv6/conf/eth0/disable_ipv6 1}", "{net/ipv4/conf/eth0/rp_filter 1}", "{net/ipv4/conf/all/rp_filter 1}", "{net/ipv4/conf/all/accept_redirects 0}"} {
		if !strings.Contains(off, want) {
			t.Errorf("without IPv6: %s lacks %s", off, want)
		}
	}
	on := fmt.Sprint(UplinkSysctls(true))
	if strings.Contains(on, "disable_ipv6") || !strings.Contains(on, "{net/ipv6/conf/eth0/accept_ra 0}") || !strings.Contains(on, "{net/ipv6/conf/eth0/addr_gen_mode 1}") {
		t.Errorf("with IPv6: %s", on)
	}
}

func TestDecodeConfigRejects(t *testing.T) {
	good := `{"version":1,"name":"web","tree":"/personas/web","exec":["/bin/web"],"tmp_size":1,"run_size":1,"shm_size":1,"seccomp":"AQIDBAUGBwg="}`
	if _, err := DecodeConfig(strings.NewReader(good)); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, bad := range map[string]string{
		"version":      strings.Replace(good, `"version":1`, `"version":2`, 1),
		"unknown key":  strings.Replace(good, `"name"`, `"extra":1,"name"`, 1),
		"trailing":     good + `{}`,
		"relative exe": strings.Replace(good, `"/bin/web"`, `"bin/web"`, 1),
		"dirty tree":   strings.Replace(good, `"/personas/web"`, `"/personas/../etc"`, 1),
		"name slash":   strings.Replace(good, `"web"`, `"a/b"`, 1),
		"no seccomp":   strings.Replace(good, `"AQIDBAUGBwg="`, `""`, 1),
		"zero tmp":     strings.Replace(good, `"tmp_size":1`, `"tmp_size":0`, 1),
		"nul in exec":  strings.Replace(good, `"/bin/web"`, `"/bin/web\u0000x"`, 1),
		"empty":        ``,
		"bad uplink":   strings.Replace(good, `"seccomp"`, `"uplink":{"address":"10.0.2.15","device":"up1"},"seccomp"`, 1),
		"no device":    strings.Replace(good, `"seccomp"`, `"uplink":{"address":"10.0.2.15/24"},"seccomp"`, 1),
		"zero shm":     strings.Replace(good, `"shm_size":1`, `"shm_size":0`, 1),
		"rlimit":       strings.Replace(good, `"seccomp"`, `"rlimits":[{"resource":16,"value":1}],"seccomp"`, 1),
		"dns":          strings.Replace(good, `"seccomp"`, `"dns":["ns.example"],"seccomp"`, 1),
		"user range":   strings.Replace(good, `"seccomp"`, `"user":{"uid":65536,"gid":0},"seccomp"`, 1),
	} {
		if _, err := DecodeConfig(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeConfig(f *testing.F) {
	var b bytes.Buffer
	sampleConfig().Encode(&b)
	f.Add(b.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeConfig(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := c.Encode(&out); err != nil {
			t.Fatal(err)
		}
		again, err := DecodeConfig(&out)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, c, again)
		}
	})
}

func TestCourierChannelFD(t *testing.T) {
	if CourierChannelFD != courier.ChannelFD {
		t.Errorf("launch.CourierChannelFD is %d, courier.ChannelFD %d", CourierChannelFD, courier.ChannelFD)
	}
}
