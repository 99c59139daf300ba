package steer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Selector names what one flag steers, by one criterion.
type Selector struct {
	// Cgroup is a cgroup v2 path (the 0:: line of /proc/PID/cgroup); it covers the cgroups
	// below it.
	Cgroup string `json:"cgroup,omitempty"`
	// Exe is an executable's absolute path, as executed.
	Exe string `json:"exe,omitempty"`
	// UID is a user.
	UID *uint32 `json:"uid,omitempty"`
	// PID is one process, with the children it forks from then on.
	PID *uint32 `json:"pid,omitempty"`
	// Source is a network of remote clients ("10.1.2.0/24"), whose connections arriving at
	// a governed server's port on this host are steered.
	Source string `json:"source,omitempty"`
}

// Validate checks that exactly one criterion is set and well formed.
func (s Selector) Validate() error {
	n := 0
	if s.Cgroup != "" {
		n++
		if !strings.HasPrefix(s.Cgroup, "/") {
			return fmt.Errorf("cgroup %q: want a path from the cgroup root, as in the 0:: line of /proc/PID/cgroup", s.Cgroup)
		}
	}
	if s.Exe != "" {
		n++
		if !filepath.IsAbs(s.Exe) {
			return fmt.Errorf("exe %q: want an absolute path", s.Exe)
		}
	}
	if s.UID != nil {
		n++
	}
	if s.PID != nil {
		n++
	}
	if s.Source != "" {
		n++
		p, err := netip.ParsePrefix(s.Source)
		if err != nil {
			return fmt.Errorf("source %q: want a network such as 10.1.2.0/24 or 2001:db8::/64", s.Source)
		}
		if p.Addr().Unmap().IsLoopback() {
			return fmt.Errorf("source %q: loopback clients are local processes: select them by cgroup, exe, uid or pid", s.Source)
		}
	}
	if n != 1 {
		return fmt.Errorf("give exactly one of cgroup, exe, uid, pid, source (got %d)", n)
	}
	return nil
}

func (s Selector) String() string {
	switch {
	case s.Cgroup != "":
		return "cgroup " + s.Cgroup
	case s.Exe != "":
		return "exe " + s.Exe
	case s.UID != nil:
		return fmt.Sprintf("uid %d", *s.UID)
	case s.PID != nil:
		return fmt.Sprintf("pid %d", *s.PID)
	case s.Source != "":
		return "source " + s.Source
	}
	return "nothing"
}

// Origins of a flag.
const (
	OriginConfig   = "config"   // the agent's configuration: comes back at every start
	OriginOperator = "operator" // vigil flags add: kept in the state directory until it expires
	OriginPolicy   = "policy"   // the policy's enforce section: while the workload runs
	OriginRule     = "rule"     // a policy rule's flag block, set when capture saw the rule match: kept like an operator's
)

// Flag is one flagged workload.
type Flag struct {
	Name     string   `json:"name"`
	Selector Selector `json:"selector"`
	Origin   string   `json:"origin"`
	// By says who set it: an operator's uid and process, a rule's name.
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// Until is when it expires; zero: never.
	Until time.Time `json:"until,omitzero"`

	id uint32 // the selector id in the kernel maps
}

// Change is what happened to a flag, for the trail.
type Change string

// Changes.
const (
	Added   Change = "added"
	Removed Change = "removed"
	Expired Change = "expired"
)

// Flags is the set of flagged workloads: it keeps the kernel's maps, the state file of the
// flags that outlive a restart, and expiry in step, and reports every change.
type Flags struct {
	s      *Steerer
	path   string
	notify func(Change, Flag, string)
	now    func() time.Time

	mu     sync.Mutex
	byName map[string]*Flag
	byID   map[uint32]*Flag
	next   uint32
}

// NewFlags manages the flags of s. path is the state file for operator and rule flags
// ("" keeps none); notify is told of every change, with who made it (removals).
func NewFlags(s *Steerer, path string, notify func(c Change, f Flag, by string)) *Flags {
	if notify == nil {
		notify = func(Change, Flag, string) {}
	}
	return &Flags{s: s, path: path, notify: notify, now: time.Now, byName: map[string]*Flag{}, byID: map[uint32]*Flag{}}
}

// Load restores the flags of the state file: the live ones are applied again, the expired
// ones are reported as expired.
func (fl *Flags) Load() error {
	if fl.path == "" {
		return nil
	}
	b, err := os.ReadFile(fl.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the flags: %w", err)
	}
	var saved []Flag
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("%s: %w", fl.path, err)
	}
	now := fl.now()
	var errs []error
	for _, f := range saved {
		if !f.Until.IsZero() && !now.Before(f.Until) {
			fl.notify(Expired, f, "")
			continue
		}
		if _, err := fl.add(f, false); err != nil {
			errs = append(errs, fmt.Errorf("flag %s from %s: %w", f.Name, fl.path, err))
		}
	}
	if err := fl.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Add flags a workload. An empty name is made up; a name or a selector already flagged is
// an error naming the flag that has it.
func (fl *Flags) Add(f Flag) (Flag, error) {
	return fl.add(f, true)
}

func (fl *Flags) add(f Flag, persist bool) (Flag, error) {
	if err := f.Selector.Validate(); err != nil {
		return Flag{}, err
	}
	if f.Origin == "" {
		f.Origin = OriginOperator
	}
	if f.Since.IsZero() {
		f.Since = fl.now().UTC()
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if f.Name == "" {
		for i := len(fl.byName) + 1; ; i++ {
			if n := fmt.Sprintf("flag-%d", i); fl.byName[n] == nil {
				f.Name = n
				break
			}
		}
	}
	if _, dup := fl.byName[f.Name]; dup {
		return Flag{}, fmt.Errorf("a flag named %q exists", f.Name)
	}
	for _, o := range fl.byName {
		if o.Selector.String() == f.Selector.String() {
			return Flag{}, fmt.Errorf("%s is already flagged by %q", f.Selector, o.Name)
		}
	}
	fl.next++
	f.id = fl.next
	var err error
	switch sel := f.Selector; {
	case sel.Cgroup != "":
		err = fl.s.FlagCgroup(sel.Cgroup, f.id)
	case sel.Exe != "":
		err = fl.s.FlagExe(sel.Exe, f.id)
	case sel.UID != nil:
		err = fl.s.FlagUID(*sel.UID, f.id)
	case sel.PID != nil:
		err = fl.s.FlagProcess(*sel.PID, f.id)
	case sel.Source != "":
		err = fl.s.FlagSource(netip.MustParsePrefix(sel.Source), f.id)
	}
	if err != nil {
		return Flag{}, err
	}
	fl.byName[f.Name] = &f
	fl.byID[f.id] = &f
	if persist {
		if err := fl.saveLocked(); err != nil {
			return f, err
		}
	}
	fl.notify(Added, f, f.By)
	return f, nil
}

// Remove unflags the flag called name.
func (fl *Flags) Remove(name, by string) error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	f, ok := fl.byName[name]
	if !ok {
		return fmt.Errorf("no flag named %q", name)
	}
	if err := fl.removeLocked(f); err != nil {
		return err
	}
	fl.notify(Removed, *f, by)
	return fl.saveLocked()
}

func (fl *Flags) removeLocked(f *Flag) error {
	var err error
	switch sel := f.Selector; {
	case sel.Cgroup != "":
		err = fl.s.UnflagCgroup(sel.Cgroup)
	case sel.Exe != "":
		err = fl.s.UnflagExe(sel.Exe, f.id)
	case sel.UID != nil:
		err = fl.s.UnflagUID(*sel.UID)
	case sel.PID != nil:
		err = fl.s.UnflagProcess(*sel.PID)
	case sel.Source != "":
		err = fl.s.UnflagSource(netip.MustParsePrefix(sel.Source))
	}
	if err != nil {
		return fmt.Errorf("unflagging %s: %w", f.Name, err)
	}
	delete(fl.byName, f.Name)
	delete(fl.byID, f.id)
	return nil
}

// Expire removes the flags whose time is up and reports them.
func (fl *Flags) Expire() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	now := fl.now()
	var errs []error
	changed := false
	for _, f := range fl.byName {
		if f.Until.IsZero() || now.Before(f.Until) {
			continue
		}
		if err := fl.removeLocked(f); err != nil {
			errs = append(errs, err)
			continue
		}
		changed = true
		fl.notify(Expired, *f, "")
	}
	if changed {
		errs = append(errs, fl.saveLocked())
	}
	return errors.Join(errs...)
}

// List returns the flags, by name.
func (fl *Flags) List() []Flag {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	out := make([]Flag, 0, len(fl.byName))
	for _, f := range fl.byName {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Name is the name of the flag with kernel selector id, "" for none (it was removed since).
func (fl *Flags) Name(id uint32) string {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if f := fl.byID[id]; f != nil {
		return f.Name
	}
	return ""
}

func (fl *Flags) save() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.saveLocked()
}

// saveLocked writes the flags that outlive a restart to the state file, atomically: not
// the configured ones, which the configuration brings back, nor the policy's, which follow
// running processes.
func (fl *Flags) saveLocked() error {
	if fl.path == "" {
		return nil
	}
	keep := []Flag{}
	for _, f := range fl.byName {
		if f.Origin != OriginConfig && f.Origin != OriginPolicy {
			keep = append(keep, *f)
		}
	}
	slices.SortFunc(keep, func(a, b Flag) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(keep, "", "  ")
	if err != nil {
		return err
	}
	tmp := fl.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the flags: %w", err)
	}
	if err := os.Rename(tmp, fl.path); err != nil {
		return fmt.Errorf("saving the flags: %w", err)
	}
	return nil
}
