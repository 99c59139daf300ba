package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/capture/ebpf"
	"github.com/vigil-db/vigil/pkg/event"
)

// Capture across agent restarts (docs/design.md, "Restarts"): the kernel side is pinned
// (ebpf.Config.PinDir) and keeps capturing while no agent runs; the state file says when
// capture last ran and whether it stopped cleanly, so that the next agent can record what it
// could not see as a gap event with its time range.

// restartState is the state file's content.
type restartState struct {
	PID int `json:"pid"`
	// Running is true from start to a clean stop: found true at start, the previous agent
	// did not stop cleanly (killed, crashed, the host went down).
	Running bool `json:"running"`
	// Alive is when capture was last known to run: the last heartbeat, or the clean stop.
	Alive time.Time `json:"alive"`
	// Pinned says that the kernel side was left pinned (kept capturing) after Alive.
	Pinned bool `json:"pinned"`
}

// PreviousRun is what the state file says of the agent that ran before this one: its pid,
// when it was last known to run, and whether it stopped cleanly.
type PreviousRun struct {
	PID   int
	Alive time.Time
	Clean bool
}

// ReadPreviousRun reads the state file that Config.StateFile names, before capture starts
// (which rewrites it); ok is false on a first start.
func ReadPreviousRun(path string) (run PreviousRun, ok bool, err error) {
	st, err := readRestartState(path)
	if err != nil || st == nil {
		return PreviousRun{}, false, err
	}
	return PreviousRun{PID: st.PID, Alive: st.Alive, Clean: !st.Running}, true, nil
}

// heartbeat is how often a running capture rewrites the state file: the bound on how early
// an unclean exit's gap starts before the exit itself.
const heartbeat = time.Second

func readRestartState(path string) (*restartState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("capture state file: %w", err)
	}
	var st restartState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("capture state file %s: %w", path, err)
	}
	return &st, nil
}

func writeRestartState(path string, st restartState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("capture state file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Clean(path)); err != nil {
		return fmt.Errorf("capture state file: %w", err)
	}
	return nil
}

// restartGaps are the gap events a start owes the trail, given the previous agent's state
// (nil: none, a first start) and what Load found. A count the agent cannot know is Lost 0:
// the gap says so rather than invent a number.
func restartGaps(prev *restartState, a ebpf.Adoption, now time.Time) []*event.Event {
	if prev == nil {
		if a.Discarded != "" {
			return []*event.Event{restartGap(now, 0, "capture state pinned by an earlier agent was removed unread ("+a.Discarded+"): statements it captured are missing, their number unknown")}
		}
		return nil
	}
	from := prev.Alive
	if prev.Running {
		// A killed agent loses what it had captured and not yet stored, which can be older
		// than its last heartbeat when it lagged (a loaded host): the window opens a
		// heartbeat earlier, so that the gap covers it.
		from = from.Add(-heartbeat)
	}
	since := from.UTC().Format(time.RFC3339Nano)
	until := now.UTC().Format(time.RFC3339Nano)
	inFlight := "statements in flight on connections open across the restart may be recorded partially (without their start) or not at all"
	switch {
	case a.Adopted && prev.Running:
		return []*event.Event{restartGap(now, 0, fmt.Sprintf("the previous agent (pid %d) exited without a clean stop after %s: "+
			"the kernel kept capturing and this agent read what it captured, but what the previous agent had read and not yet stored "+
			"(up to about a second's statements before it exited) is lost, their number unknown; %s", prev.PID, since, inFlight))}
	case a.Adopted:
		return nil
	}
	why := "no pinned capture was found (the host restarted, or the pins were removed)"
	if a.Discarded != "" {
		why = "the pinned capture was removed unread: " + a.Discarded
	} else if !prev.Pinned {
		why = "the previous agent did not leave capture pinned"
	}
	how := "stopped cleanly"
	if prev.Running {
		how = "exited without a clean stop"
	}
	return []*event.Event{restartGap(now, 0, fmt.Sprintf("agent was not capturing from %s to %s: the previous agent (pid %d) %s and %s; "+
		"statements in that window are missing, their number unknown; %s", since, until, prev.PID, how, why, inFlight))}
}

func restartGap(now time.Time, lost uint64, detail string) *event.Event {
	return &event.Event{Time: now, Type: event.TypeGap, Source: event.SourceEBPF, Lost: lost, Detail: detail}
}

// removeStalePins removes what an earlier agent left pinned in Config.StalePinDir, and
// says why for the gap event ("" when nothing was there).
func (c *Capturer) removeStalePins() string {
	if c.cfg.PinDir != "" || c.cfg.StalePinDir == "" {
		return ""
	}
	if ents, err := os.ReadDir(c.cfg.StalePinDir); err != nil || len(ents) == 0 {
		if err == nil {
			_ = os.Remove(c.cfg.StalePinDir)
		}
		return ""
	}
	why := "this agent does not keep capture across restarts"
	if err := bpffs.Unpin(c.cfg.StalePinDir); err != nil {
		c.log.Error("removing capture an earlier agent left pinned: its hooks may run on", "pin_dir", c.cfg.StalePinDir, "err", err)
		why += " (removing it failed: " + err.Error() + ")"
	}
	return why
}

// startRestart reads the previous agent's state, records the gaps it implies and, for an
// adopted ring, what the kernel could not keep in it meanwhile; then marks capture running.
// a is what Load found in the pin directory.
func (c *Capturer) startRestart(prev *restartState, a ebpf.Adoption, now time.Time) {
	dir := c.cfg.PinDir
	if dir == "" {
		dir = c.cfg.StalePinDir
	}
	if a.Adopted {
		c.log.Info("adopted the pinned capture of the previous agent: reading what it captured meanwhile", "pin_dir", dir)
	} else if a.Discarded != "" {
		c.log.Warn("pinned capture state not adopted", "pin_dir", dir, "why", a.Discarded)
	}
	for _, e := range restartGaps(prev, a, now) {
		c.log.Warn("capture restart gap", "detail", e.Detail)
		c.sink.Emit(e)
	}
	if a.Adopted && prev != nil {
		c.reportKernelLossDetail(now, fmt.Sprintf("while no agent read the pinned ring buffer (after %s) it overflowed", prev.Alive.UTC().Format(time.RFC3339Nano)))
	}
	c.beat(now, true)
}

// beat rewrites the state file.
func (c *Capturer) beat(now time.Time, running bool) {
	if c.cfg.StateFile == "" {
		return
	}
	st := restartState{PID: os.Getpid(), Running: running, Alive: now, Pinned: c.cfg.PinDir != ""}
	if err := writeRestartState(c.cfg.StateFile, st); err != nil {
		c.log.Error("capture state not written: after a restart the gap's start may be too early", "err", err)
	}
}

// heartbeats rewrites the state file every heartbeat until ctx ends.
func (c *Capturer) heartbeats(ctx context.Context) {
	if c.cfg.StateFile == "" {
		return
	}
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.beat(now, true)
		}
	}
}
