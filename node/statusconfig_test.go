package node

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestStatusConfig: a plain status listener is refused anywhere but on a loopback IP;
// an HTTPS one may listen anywhere.
func TestStatusConfig(t *testing.T) {
	good, err := LoadConfig("../deploy/examples/meta-1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		listen   string
		loopback bool
		sample   time.Duration
		want     string // "" = valid
	}{
		{"", false, 0, ""},
		{"127.0.0.1:8440", true, 0, ""},
		{"[::1]:8440", true, time.Minute, ""},
		{"0.0.0.0:8440", false, 0, ""},
		{":8440", false, 0, ""},
		{"0.0.0.0:8440", true, 0, "must be on a loopback IP"},
		{":8440", true, 0, "must be on a loopback IP"},
		{"10.0.0.5:8440", true, 0, "must be on a loopback IP"},
		{"localhost:8440", true, 0, "must be on a loopback IP"},
		{"8440", false, 0, "status_listen"},
		{"", true, 0, "status_listen is empty"},
		{"127.0.0.1:8440", true, 10 * time.Millisecond, "status_sample_interval"},
	} {
		c := good
		c.StatusListen, c.StatusLoopback, c.StatusSampleInterval = tc.listen, tc.loopback, tc.sample
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("listen %q loopback %v: %v, want valid", tc.listen, tc.loopback, err)
		case tc.want != "" && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("listen %q loopback %v: %v, want ErrConfig mentioning %q", tc.listen, tc.loopback, err, tc.want)
		}
	}
}
