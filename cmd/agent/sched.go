package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// schedBatch moves every thread of the agent to SCHED_BATCH: the same CPU share as before
// (completeness under saturation needs it), but a waking agent thread no longer preempts
// a running database backend — the agent's work waits for the end of the backend's slice
// instead of lengthening the statement it interrupted. Threads the runtime starts later
// inherit the policy from the thread that creates them. Only for agents without a proxy
// (see runAgent).
func schedBatch() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("listing the agent's threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}, 0); err != nil && err != unix.ESRCH {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}
