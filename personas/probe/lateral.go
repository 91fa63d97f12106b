package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The lateral probe: run in several uplinked personas at once, each tries to reach the others
// in every way a network offers (unicast UDP and TCP to their addresses, subnet and limited
// broadcast, IPv4 and IPv6 multicast) and over System V and POSIX IPC, while listening for all
// of it. Whatever arrives from another persona is answered (a reply attempted, as an attacker
// would) and reported as an ESCAPE. It also checks that its uplink has exactly the addresses and
// routes its policy names.
const (
	lateralUDP   = 7777
	lateralTCP   = 7778
	lateralGroup = "239.7.7.7"
	// ipcKeyBase is the System V key every lateral probe creates exclusively: one IPC namespace
	// shared by two personas would make the second creation fail.
	ipcKeyBase = 0x5350494e
)

type peerList []netip.Addr

func (p *peerList) String() string { return fmt.Sprint(*p) }
func (p *peerList) Set(s string) error {
	a, err := netip.ParseAddr(s)
	*p = append(*p, a)
	return err
}

func lateral(args []string) {
	fs := flag.NewFlagSet("lateral", flag.ExitOnError)
	name := fs.String("name", "", "this persona's name")
	addr := fs.String("addr", "", "IPv4 uplink address/prefix")
	gw := fs.String("gw", "", "IPv4 gateway")
	addr6 := fs.String("addr6", "", "IPv6 uplink address/prefix, if any")
	peerNames := fs.String("peers", "", "the other personas' names, comma separated")
	var peers peerList
	fs.Var(&peers, "peer", "another persona's address (repeated)")
	rounds := fs.Int("rounds", 40, "sending rounds, 500 ms apart")
	fs.Parse(args)
	self := netip.MustParsePrefix(*addr)
	var self6 netip.Prefix
	if *addr6 != "" {
		self6 = netip.MustParsePrefix(*addr6)
	}
	var p prober
	p.uplinkShape(self, netip.MustParseAddr(*gw), self6, peers)
	fmt.Printf("probe: lateral: %s sending for %d rounds\n", *name, *rounds)

	var mu sync.Mutex
	received := 0
	heard := func(from netip.Addr, msg string) {
		mu.Lock()
		defer mu.Unlock()
		if from == self.Addr() || from == self6.Addr() || strings.TrimSpace(msg) == "lateral from "+*name {
			return // its own broadcast and multicast, looped back
		}
		received++
		fmt.Printf("probe: lateral: ESCAPE %s received %q from %s\n", *name, strings.TrimSpace(msg), from)
	}
	ipc := ipcCreate(&p, *name)
	listenUDP(&p, "udp4", heard)
	if self6.IsValid() {
		listenUDP(&p, "udp6", heard)
	}
	listenTCP(&p, *name, peers)

	dests := []string{}
	for _, a := range peers {
		dests = append(dests, net.JoinHostPort(a.String(), strconv.Itoa(lateralUDP)))
	}
	bcast := netip.AddrFrom4(broadcastOf(self))
	dests = append(dests, bcast.String()+":7777", "255.255.255.255:7777", "224.0.0.1:7777", lateralGroup+":7777")
	if idx, err := uplinkIndex(); err == nil {
		dests = append(dests, fmt.Sprintf("[ff02::1%%%d]:7777", idx), fmt.Sprintf("[ff02::2%%%d]:7777", idx))
	}
	sent := map[string]int{}
	refused := map[string]string{}
	for range *rounds {
		for _, d := range dests {
			if err := sendUDP(d, "lateral from "+*name); err != nil {
				refused[d] = err.Error()
			} else {
				sent[d]++
			}
		}
		for _, a := range peers {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(a.String(), strconv.Itoa(lateralTCP)), 300*time.Millisecond)
			if err == nil {
				fmt.Fprintf(c, "lateral from %s\n", *name)
				c.Close()
				p.report("tcp to "+a.String(), true, "connected")
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	for _, d := range dests {
		fmt.Printf("probe: lateral: %s to %s: sent %d, refused %q\n", *name, d, sent[d], refused[d])
	}
	for _, a := range peers {
		if sent[net.JoinHostPort(a.String(), strconv.Itoa(lateralUDP))] > 0 {
			p.report("unicast to "+a.String(), true, "sent: a route reaches another persona")
		} else {
			p.report("unicast to "+a.String(), false, "refused")
		}
	}
	ipcLook(&p, ipc, strings.Split(*peerNames, ","))
	mu.Lock()
	p.report("nothing from another persona", received > 0, fmt.Sprintf("%d received", received))
	mu.Unlock()
	fmt.Printf("probe: lateral: done %s %d checks, %d escapes, %d broadcast and multicast datagrams sent\n",
		*name, p.checks, p.escapes, sent[bcast.String()+":7777"]+sent["255.255.255.255:7777"]+sent["224.0.0.1:7777"]+sent[lateralGroup+":7777"])
	for {
		time.Sleep(time.Hour)
	}
}

func broadcastOf(p netip.Prefix) [4]byte {
	a := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return a
}

// uplinkShape checks eth0's addresses and routes against the policy's: IPv4 from
// /proc/net/fib_trie and /proc/net/route, IPv6 from /proc/net/if_inet6 and /proc/net/ipv6_route.
func (p *prober) uplinkShape(self netip.Prefix, gw netip.Addr, self6 netip.Prefix, peers []netip.Addr) {
	local := map[netip.Addr]bool{}
	trie, _ := os.ReadFile("/proc/net/fib_trie")
	var last netip.Addr
	for _, line := range strings.Split(string(trie), "\n") {
		f := strings.Fields(strings.TrimLeft(line, " |-+`"))
		if len(f) == 1 {
			last, _ = netip.ParseAddr(f[0])
		}
		if len(f) == 3 && f[0] == "/32" && f[2] == "LOCAL" && !last.IsLoopback() {
			local[last] = true
		}
	}
	var locals []string
	for a := range local {
		locals = append(locals, a.String())
	}
	slices.Sort(locals)
	p.report("uplink ipv4 addresses", len(locals) != 1 || locals[0] != self.Addr().String(), fmt.Sprintf("%v", locals))

	routes, _ := os.ReadFile("/proc/net/route")
	var eth0 []string
	rejects := 0
	for _, line := range strings.Split(string(routes), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, g, mask := hexAddr(f[1]), hexAddr(f[2]), hexAddr(f[7])
		flags, _ := strconv.ParseUint(f[3], 16, 32)
		if flags&unix.RTF_REJECT != 0 {
			rejects++
			continue
		}
		eth0 = append(eth0, fmt.Sprintf("%s %s/%s via %s", f[0], dst, mask, g))
	}
	slices.Sort(eth0)
	want := []string{
		fmt.Sprintf("eth0 0.0.0.0/0.0.0.0 via %s", gw),
		fmt.Sprintf("eth0 %s/%s via 0.0.0.0", self.Masked().Addr(), netip.AddrFrom4(maskOf(self.Bits()))),
	}
	slices.Sort(want)
	p.report("uplink ipv4 routes", !slices.Equal(eth0, want), fmt.Sprintf("%v, %d refused", eth0, rejects))
	v4peers := 0
	for _, a := range peers {
		if a.Is4() {
			v4peers++
		}
	}
	p.report("routes refuse every other persona", rejects != v4peers, fmt.Sprintf("%d reject routes for %d IPv4 peers", rejects, v4peers))

	inet6, _ := os.ReadFile("/proc/net/if_inet6")
	var v6 []string
	for _, line := range strings.Split(string(inet6), "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && f[5] == "eth0" {
			b, _ := hexBytes(f[0])
			a, _ := netip.AddrFromSlice(b)
			v6 = append(v6, a.String())
		}
	}
	var want6 []string
	if self6.IsValid() {
		want6 = []string{self6.Addr().String()}
	}
	p.report("uplink ipv6 addresses", !slices.Equal(v6, want6), fmt.Sprintf("%v, policy %v", v6, want6))
}

func hexAddr(s string) netip.Addr {
	v, _ := strconv.ParseUint(s, 16, 32)
	return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
}

func maskOf(bits int) [4]byte {
	var m [4]byte
	for i := range bits {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func hexBytes(s string) ([]byte, error) {
	b := make([]byte, len(s)/2)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		b[i] = byte(v)
	}
	return b, nil
}

func uplinkIndex() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("eth0")
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

func sendUDP(dst, msg string) error {
	c, err := net.Dial("udp", dst)
	if err != nil {
		return err
	}
	defer c.Close()
	if raw, err := c.(*net.UDPConn).SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1) })
	}
	_, err = c.Write([]byte(msg))
	return err
}

// listenUDP listens on every address of the family, joined to lateralGroup, and answers
// whatever it hears.
func listenUDP(p *prober, network string, heard func(netip.Addr, string)) {
	c, err := net.ListenUDP(network, &net.UDPAddr{Port: lateralUDP})
	if err != nil {
		p.report("listen "+network, true, err.Error())
		return
	}
	if network == "udp4" {
		raw, _ := c.SyscallConn()
		var jerr error
		raw.Control(func(fd uintptr) {
			m := unix.IPMreqn{Multiaddr: netip.MustParseAddr(lateralGroup).As4()}
			jerr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, &m)
		})
		if jerr != nil {
			fmt.Printf("probe: lateral: join %s: %v\n", lateralGroup, jerr)
		}
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			heard(from.Addr().Unmap(), string(buf[:n]))
			c.WriteToUDPAddrPort([]byte("reply"), from) // the attacker's reply
		}
	}()
}

// listenTCP answers the host (through QEMU's forward, from the gateway) with the persona's name,
// and reports as an escape any connection from another persona.
func listenTCP(p *prober, name string, peers []netip.Addr) {
	l, err := net.Listen("tcp4", fmt.Sprintf(":%d", lateralTCP))
	if err != nil {
		p.report("listen tcp", true, err.Error())
		return
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			if slices.Contains(peers, from) {
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Printf("probe: lateral: ESCAPE %s accepted %q from %s\n", name, strings.TrimSpace(line), from)
			} else {
				fmt.Printf("probe: lateral: the host reached %s from %s\n", name, from)
			}
			fmt.Fprintf(c, "probe %s\n", name)
			c.Close()
		}
	}()
}

type ipcObjects struct{ name string }

// ipcKey is the System V key of the named persona's own segment.
func ipcKey(name string) int {
	h := 0
	for _, c := range name {
		h = h*31 + int(c)
	}
	return ipcKeyBase + 1 + h&0xffff
}

// ipcCreate makes a shared segment under the common key (exclusively), one under the persona's
// own key, and a POSIX message queue named after it.
func ipcCreate(p *prober, name string) ipcObjects {
	_, err := unix.SysvShmGet(ipcKeyBase, 4096, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	p.report("ipc namespace: exclusive shm key", err != nil, fmt.Sprintf("shmget %#x: %v", ipcKeyBase, err))
	if _, err := unix.SysvShmGet(ipcKey(name), 4096, unix.IPC_CREAT|0o600); err != nil {
		fmt.Printf("probe: lateral: shmget own: %v\n", err)
	}
	fd, err := mqOpen("spine-probe-"+name, unix.O_CREAT|unix.O_RDWR)
	if err != nil {
		fmt.Printf("probe: lateral: mq_open own: %v\n", err)
	} else {
		unix.Close(fd)
	}
	fd, err = mqOpen("spine-probe", unix.O_CREAT|unix.O_EXCL|unix.O_RDWR)
	p.report("ipc namespace: exclusive mqueue", err != nil, fmt.Sprint(err))
	if err == nil {
		unix.Close(fd)
	}
	return ipcObjects{name: name}
}

// ipcLook looks for the peers' own objects: none may be visible.
func ipcLook(p *prober, _ ipcObjects, peers []string) {
	for _, peer := range peers {
		if peer == "" {
			continue
		}
		_, err := unix.SysvShmGet(ipcKey(peer), 0, 0)
		p.report("ipc namespace: shm of "+peer+" invisible", !errors.Is(err, unix.ENOENT), fmt.Sprint(err))
		fd, err := mqOpen("spine-probe-"+peer, unix.O_RDONLY)
		if err == nil {
			unix.Close(fd)
		}
		p.report("ipc namespace: mqueue of "+peer+" invisible", !errors.Is(err, unix.ENOENT), fmt.Sprint(err))
	}
}
