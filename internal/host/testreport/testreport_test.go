package testreport

import (
	"bytes"
	"strings"
	"testing"
)

const stream = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: figure: reset_after=6.3s\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":1.5}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:3: boom\n"}
{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0.1}
{"Action":"skip","Package":"p","Test":"TestC","Elapsed":0}
{"Action":"fail","Package":"p","Elapsed":2}
not json: build failed
`

func TestRead(t *testing.T) {
	rep := New()
	var echo bytes.Buffer
	if err := rep.Read(strings.NewReader(stream), &echo); err != nil {
		t.Fatal(err)
	}
	a := rep.Find("TestA")
	if len(a) != 1 || a[0].Action != "pass" || a[0].Figures["reset_after"] != "6.3s" {
		t.Fatalf("TestA: %+v", a)
	}
	if b := rep.Find("p.TestB"); len(b) != 1 || b[0].Action != "fail" || len(b[0].Output) != 1 {
		t.Fatalf("TestB: %+v", b)
	}
	passed, failed, skipped := rep.Counts()
	if passed != 1 || failed != 1 || skipped != 1 {
		t.Fatalf("counts %d/%d/%d", passed, failed, skipped)
	}
	for _, want := range []string{"--- FAIL: p.TestB", "boom", "FAIL p", "build failed"} {
		if !strings.Contains(echo.String(), want) {
			t.Errorf("echo lacks %q:\n%s", want, echo.String())
		}
	}
}
