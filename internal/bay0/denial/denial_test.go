package denial

import (
	"strings"
	"testing"
	"time"
)

const sample = `5,1234,56789012,-;audit: type=1326 audit(1764312345.678:12): auid=4294967295 uid=165536 gid=165536 ses=4294967295 subj=unconfined pid=345 comm="redis-server" exe="/usr/bin/redis-server" sig=0 arch=c000003e syscall=288 compat=0 ip=0x7f00 code=0x50000`

func TestParse(t *testing.T) {
	r, ok := Parse(sample + "\n SUBSYSTEM=x\n")
	if !ok || r.UID != 165536 || r.PID != 345 || r.Comm != "redis-server" || r.Syscall != 288 || r.Killed || r.Logged {
		t.Fatalf("Parse = %+v %v", r, ok)
	}
	if r.Call() != "accept4 (288)" {
		t.Errorf("Call = %q", r.Call())
	}
	k, ok := Parse(strings.Replace(strings.Replace(sample, "code=0x50000", "code=0x80000000", 1), "arch=c000003e", "arch=40000003", 1))
	if !ok || !k.Killed || k.Call() != "288 of arch 40000003" {
		t.Errorf("kill record: %+v %v %q", k, ok, k.Call())
	}
	l, ok := Parse(strings.Replace(sample, "code=0x50000", "code=0x7ffc0000", 1))
	if !ok || !l.Logged {
		t.Errorf("log record: %+v %v", l, ok)
	}
	for _, bad := range []string{
		"6,1,2,-;bay0: hello",
		"audit: type=1400 apparmor",
		strings.Replace(sample, "uid=165536", "uid=x", 1),
		strings.Replace(sample, "code=0x50000", "code=0x7fff0000", 1), // allowed: not a refusal
		"",
	} {
		if r, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) = %+v", bad, r)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add("audit: type=1326 uid=1 pid=2 syscall=3 code=0x50000")
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := Parse(s)
		if ok && r.Call() == "" {
			t.Fatalf("a record without a call: %+v", r)
		}
	})
}

func TestTrackerRateLimits(t *testing.T) {
	var tr Tracker
	t0 := time.Unix(1000, 0)
	line, ok := tr.Add("web", "accept4 (288)", t0)
	if !ok || line != "persona web: denied syscall accept4 (288), once" {
		t.Fatalf("first: %q %v", line, ok)
	}
	// A loop of the same refusal says nothing more within the interval...
	for i := 1; i <= 100; i++ {
		if line, ok := tr.Add("web", "accept4 (288)", t0.Add(time.Duration(i)*10*time.Millisecond)); ok {
			t.Fatalf("refusal %d logged: %q", i, line)
		}
	}
	// ...but a new call is said at once, with what is pending.
	line, ok = tr.Add("web", "poll (7)", t0.Add(2*time.Second))
	if !ok || line != "persona web: denied syscall accept4 (288), 100 times; poll (7), once" {
		t.Errorf("new call: %q %v", line, ok)
	}
	tr.Add("web", "poll (7)", t0.Add(3*time.Second))
	if got := tr.Flush(t0.Add(5 * time.Second)); len(got) != 0 {
		t.Errorf("flushed within the interval: %q", got)
	}
	if got := tr.Flush(t0.Add(13 * time.Second)); len(got) != 1 || got[0] != [2]string{"web", "persona web: denied syscall poll (7), once"} {
		t.Errorf("flush: %q", got)
	}
	if got := strings.Join(tr.Summary("web"), "; "); got != "accept4 (288), 101 times; poll (7), 2 times" {
		t.Errorf("summary: %q", got)
	}
	if tr.Summary("other") != nil {
		t.Error("a persona with no refusals has a summary")
	}
}
