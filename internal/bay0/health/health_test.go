package health

import (
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := New(t0, "main", "supervisor", "control")
	if err := m.Check(t0.Add(time.Second), 2*time.Second); err != nil {
		t.Fatalf("fresh loops reported stuck: %v", err)
	}
	m.Beat("main", t0.Add(3*time.Second))
	m.Beat("control", t0.Add(3*time.Second))
	err := m.Check(t0.Add(4*time.Second), 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "supervisor silent for 4s") || strings.Contains(err.Error(), "main") {
		t.Fatalf("want only the supervisor named as stuck, got %v", err)
	}
	m.Beat("supervisor", t0.Add(4*time.Second))
	if err := m.Check(t0.Add(4*time.Second), 2*time.Second); err != nil {
		t.Fatalf("after every loop beat: %v", err)
	}
}

func TestStalestFirst(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := New(t0, "a")
	m.Beat("b", t0.Add(time.Second))
	err := m.Check(t0.Add(10*time.Second), time.Second)
	if err == nil || strings.Index(err.Error(), "a silent") > strings.Index(err.Error(), "b silent") {
		t.Fatalf("want the stalest loop first: %v", err)
	}
}

func TestOwnWindowWaitingAndDrop(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := New(t0, "main")
	m.Watch("boot: persist", 10*time.Second, t0)
	if err := m.Check(t0.Add(5*time.Second), 6*time.Second); err != nil {
		t.Fatalf("a loop within its own window: %v", err)
	}
	if err := m.Check(t0.Add(11*time.Second), 20*time.Second); err == nil || !strings.Contains(err.Error(), "boot: persist") {
		t.Fatalf("a loop past its own window must be named: %v", err)
	}
	m.Waiting("boot: persist")
	if err := m.Check(t0.Add(time.Hour), 2*time.Hour); err != nil {
		t.Fatalf("a loop waiting for a person: %v", err)
	}
	m.Beat("boot: persist", t0.Add(time.Hour))
	if err := m.Check(t0.Add(time.Hour+11*time.Second), 2*time.Hour); err == nil {
		t.Fatal("after its beat the loop is held to its window again")
	}
	m.Drop("boot: persist")
	if err := m.Check(t0.Add(time.Hour+11*time.Second), 2*time.Hour); err != nil {
		t.Fatalf("a dropped loop: %v", err)
	}
}
