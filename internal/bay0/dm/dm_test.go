package dm

import "testing"

func TestCryptKeyID(t *testing.T) {
	c := Crypt{Name: "persist", Device: "/dev/vda4", Cipher: "aes-xts-plain64", Key: make([]byte, 64), Length: 4096, SectorSize: 4096}
	if got, want := c.keyID(), ":64:logon:bay0:persist"; got != want {
		t.Errorf("keyID = %q, want %q", got, want)
	}
	if err := c.check(); err != nil {
		t.Errorf("check: %v", err)
	}
}

func TestCryptCheck(t *testing.T) {
	good := Crypt{Name: "persist", Device: "/dev/vda4", Cipher: "aes-xts-plain64", Key: make([]byte, 64),
		Offset: 8 << 20, Length: 24 << 20, SectorSize: 4096}
	for name, edit := range map[string]func(*Crypt){
		"no name":          func(c *Crypt) { c.Name = "" },
		"no key":           func(c *Crypt) { c.Key = nil },
		"odd sector":       func(c *Crypt) { c.SectorSize = 1024 },
		"empty":            func(c *Crypt) { c.Length = 0 },
		"partial sector":   func(c *Crypt) { c.Length = 4096 + 512 },
		"unaligned offset": func(c *Crypt) { c.Offset = 100 },
	} {
		c := good
		edit(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: check accepted %+v", name, c)
		}
	}
}
