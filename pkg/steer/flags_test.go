package steer

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSelectorValidate(t *testing.T) {
	uid := uint32(0)
	for _, tc := range []struct {
		sel     Selector
		wantErr string
	}{
		{Selector{Cgroup: "/system.slice/x.service"}, ""},
		{Selector{Exe: "/usr/bin/psql"}, ""},
		{Selector{UID: &uid}, ""},
		{Selector{}, "exactly one"},
		{Selector{Cgroup: "/x", UID: &uid}, "exactly one"},
		{Selector{Cgroup: "x"}, "cgroup \"x\""},
		{Selector{Exe: "psql"}, "exe \"psql\""},
	} {
		err := tc.sel.Validate()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%+v: %v, want %q", tc.sel, err, tc.wantErr)
		}
	}
}

// TestFlagsPersist: operator flags outlive the Flags that set them, configured ones do not
// (the configuration brings them back), and one that expired while nobody ran is reported
// as expired, not applied.
func TestFlagsPersist(t *testing.T) {
	s, root := load(t)
	live, _ := cgroup(t, root)
	gone, _ := cgroup(t, root)
	conf, _ := cgroup(t, root)
	path := filepath.Join(t.TempDir(), "flags.json")
	now := time.Now()
	var changes []string
	record := func(c Change, f Flag, by string) { changes = append(changes, string(c)+" "+f.Name) }

	a := NewFlags(s, path, record)
	for _, f := range []Flag{
		{Name: "live", Selector: Selector{Cgroup: live}, Until: now.Add(time.Hour)},
		{Name: "gone", Selector: Selector{Cgroup: gone}, Until: now.Add(50 * time.Millisecond)},
		{Name: "conf", Selector: Selector{Cgroup: conf}, Origin: OriginConfig},
	} {
		if _, err := a.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	// A new agent on the same state directory (the kernel maps may still hold the old
	// entries; Load writes them again).
	time.Sleep(100 * time.Millisecond)
	changes = nil
	c := NewFlags(s, path, record)
	if err := c.Load(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range c.List() {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "live" || strings.Join(changes, ",") != "expired gone,added live" {
		t.Errorf("after Load: flags %v, changes %v; want [live], [expired gone, added live]", names, changes)
	}
}
