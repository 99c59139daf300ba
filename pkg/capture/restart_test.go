package capture

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/capture/ebpf"
)

// TestRestartGaps: which starts owe the trail a gap event, and what it says.
func TestRestartGaps(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 5, 0, time.UTC)
	alive := now.Add(-3 * time.Second)
	tests := []struct {
		name  string
		prev  *restartState
		a     ebpf.Adoption
		wants []string // substrings of the one gap's detail; nil: no gap
	}{
		{"first start", nil, ebpf.Adoption{}, nil},
		{"clean stop, pins adopted", &restartState{PID: 7, Alive: alive, Pinned: true}, ebpf.Adoption{Adopted: true}, nil},
		{"kill -9, pins adopted", &restartState{PID: 7, Running: true, Alive: alive, Pinned: true}, ebpf.Adoption{Adopted: true},
			[]string{"pid 7", "without a clean stop", "not yet stored", "partially"}},
		// A killed agent: the window opens a heartbeat before it was last seen.
		{"kill -9, host rebooted", &restartState{PID: 7, Running: true, Alive: alive, Pinned: true}, ebpf.Adoption{},
			[]string{"not capturing from 2026-12-03T10:00:01Z to 2026-12-03T10:00:05Z", "without a clean stop", "no pinned capture was found"}},
		{"clean stop without pins", &restartState{PID: 7, Alive: alive}, ebpf.Adoption{},
			[]string{"not capturing from 2026-12-03T10:00:02Z", "stopped cleanly", "did not leave capture pinned"}},
		{"another build's pins", &restartState{PID: 7, Alive: alive, Pinned: true}, ebpf.Adoption{Discarded: "another build"},
			[]string{"not capturing from", "removed unread: another build"}},
		{"pins without a state file", nil, ebpf.Adoption{Discarded: "another build"}, []string{"removed unread"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gaps := restartGaps(tt.prev, tt.a, now)
			if tt.wants == nil {
				if len(gaps) != 0 {
					t.Fatalf("gaps %q, want none", gaps[0].Detail)
				}
				return
			}
			if len(gaps) != 1 {
				t.Fatalf("%d gaps, want 1", len(gaps))
			}
			for _, w := range tt.wants {
				if !strings.Contains(gaps[0].Detail, w) {
					t.Errorf("detail %q lacks %q", gaps[0].Detail, w)
				}
			}
			if gaps[0].Lost != 0 {
				t.Errorf("lost %d: the agent cannot know the count", gaps[0].Lost)
			}
		})
	}
}

func TestRestartStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "capture.json")
	if st, err := readRestartState(path); st != nil || err != nil {
		t.Fatalf("missing file: %v, %v", st, err)
	}
	want := restartState{PID: 42, Running: true, Alive: time.Unix(1700000000, 5).UTC(), Pinned: true}
	if err := writeRestartState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readRestartState(path)
	if err != nil || *got != want {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
}
