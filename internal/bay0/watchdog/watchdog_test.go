package watchdog

import (
	"errors"
	"testing"
	"time"
)

type fakeDog struct {
	timeout, feeds int
	failFeed       bool
}

func (f *fakeDog) setTimeout(fd int, s int) (int, error) { f.timeout = s; return s, nil }
func (f *fakeDog) keepalive(fd int) error {
	if f.failFeed {
		return errors.New("EIO")
	}
	f.feeds++
	return nil
}

func TestConfigureRoundsUpAndFeeds(t *testing.T) {
	f := &fakeDog{}
	d, err := configure(3, f, 2500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if f.timeout != 3 || d.Timeout() != 3*time.Second || f.feeds != 1 {
		t.Fatalf("timeout %d, feeds %d", f.timeout, f.feeds)
	}
	f.failFeed = true
	if err := d.Feed(); err == nil {
		t.Fatal("a failing keepalive must be reported")
	}
}
