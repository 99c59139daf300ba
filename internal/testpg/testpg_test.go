package testpg

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	s := Start(t)
	out, err := s.Psql("postgres", "SELECT current_setting('ssl')")
	if err != nil {
		t.Fatal(err)
	}
	if out != "on" {
		t.Fatalf("ssl = %q, want on", out)
	}
}

// helperEnv makes the test binary, re-executed, start a server, print it and wait to be
// killed: a fuzz worker the fuzzing engine kills.
const helperEnv = "TESTPG_HELPER"

// TestDiesWithParent: a process killed with SIGKILL, which runs no cleanup, takes its
// server with it, backends included.
func TestDiesWithParent(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		s, err := StartServer()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		b, err := os.ReadFile(filepath.Join(s.Dir, "postmaster.pid"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("server %s %d %s\n", strings.SplitN(string(b), "\n", 2)[0], s.Port, s.SocketDir)
		time.Sleep(time.Minute)
		os.Exit(1)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestDiesWithParent$", "-test.count=1")
	helper.Env = append(os.Environ(), helperEnv+"=1")
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = helper.Wait() }()
	var pid, port int
	var root string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "server %d %d %s", &pid, &port, &root); err == nil {
			break
		}
		t.Log(sc.Text())
	}
	if pid == 0 {
		_ = helper.Process.Kill()
		t.Fatal("the helper printed no server")
	}
	procs := append([]int{pid}, children(pid)...)
	if len(procs) < 3 {
		t.Errorf("postmaster %d has processes %v, want it and its auxiliary processes", pid, procs)
	}
	t.Cleanup(func() {
		// Whatever survived (the test failed): not left to run on the host.
		for _, p := range procs {
			if alive(p) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		_ = os.RemoveAll(root)
	})

	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []int
		for _, p := range procs {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of the server on port %d still run 5s after their test process was killed", left, port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The main goroutine keeps the main thread: a goroutine that exits locked to the main
// thread leaves it wedged rather than ended, and TestOutlivesStartingThread needs its
// starting thread to end.
func init() { runtime.LockOSThread() }

// TestOutlivesStartingThread: the server lives as long as the process, not as long as the
// OS thread that happened to start it (the parent-death signal is sent when that thread
// exits; here, a goroutine that exits locked to its thread ends the thread).
func TestOutlivesStartingThread(t *testing.T) {
	started := make(chan *Server, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		started <- Start(t)
	}()
	s := <-started
	time.Sleep(500 * time.Millisecond)
	if _, err := s.Psql("postgres", "SELECT 1"); err != nil {
		t.Fatalf("the server died with the thread that started it: %v", err)
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		if ppid, _, ok := stat(d); ok && ppid == pid {
			p, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			out = append(out, p)
		}
	}
	return out
}

// alive: the process exists and is no zombie (its parent gone, a zombie waits for whoever
// reaps orphans, which is not this test).
func alive(pid int) bool {
	_, state, ok := stat(fmt.Sprintf("/proc/%d/stat", pid))
	return ok && state != "Z" && state != "X"
}

func stat(path string) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}
