package client

import "testing"

func TestExcludeMatcher(t *testing.T) {
	ex, err := ExcludeMatcher([]string{"*.tmp", "node_modules", "/srv/cache/*"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/srv/a.tmp": true, "/srv/x/y/b.tmp": true, "/srv/app/node_modules": true, "/srv/cache/blob": true,
		"/srv/a.txt": false, "/srv/cache": false, "/srv/other/cache/blob": false, "/srv/tmp": false,
	} {
		if got := ex(path); got != want {
			t.Errorf("exclude(%s) = %v, want %v", path, got, want)
		}
	}
	if _, err := ExcludeMatcher([]string{"[a-"}); err == nil {
		t.Fatal("malformed pattern accepted")
	}
	if ex, err := ExcludeMatcher(nil); ex != nil || err != nil {
		t.Fatal("no patterns should give a nil matcher")
	}
}
