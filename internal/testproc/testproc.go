// Package testproc starts the servers that tests run (PostgreSQL, ClickHouse, ZooKeeper) so
// that they die with the test process however it ends: a fuzz worker the fuzzing engine
// kills, or a test binary killed by its timeout, runs no cleanup, and a server it leaves
// running holds memory, ports and files on a shared machine until someone notices.
//
// The kernel's parent-death signal (PR_SET_PDEATHSIG, SysProcAttr.Pdeathsig) does it: the
// server gets SIGKILL when its parent dies. "Parent" is the thread that forked the server,
// not the process, and Go moves goroutines between threads and ends a thread when a
// goroutine exits locked to it. So Start forks from a goroutine locked to its own thread
// and keeps that goroutine (and so the thread) waiting for the server until it exits: the
// signal comes when the whole process dies, not when some thread happens to.
package testproc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// Proc is a started server process.
type Proc struct {
	// Pid is the server's process id.
	Pid  int
	proc *os.Process
	done chan struct{}
	err  error
}

// Start starts cmd with SIGKILL as its parent-death signal (on top of cmd.SysProcAttr) and
// reaps it when it exits. cmd must run the server itself, not a launcher that forks it off
// and exits (pg_ctl): the signal reaches only the process started here.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Proc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is the server's parent and must not run anything else
		// that could end it. It ends when this goroutine returns, once the server is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("starting %s: %w", cmd.Path, err)
			return
		}
		p.Pid, p.proc = cmd.Process.Pid, cmd.Process
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (cmd.Wait's error), once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process; after it has exited, it is an error and reaches no
// other process that reused the pid.
func (p *Proc) Signal(sig os.Signal) error { return p.proc.Signal(sig) }
