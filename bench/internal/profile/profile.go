// Package profile fetches CPU profiles from a running agent's /debug/pprof (vigil run
// --pprof) for the benchmarks, so that each benchmark result can say where the time went.
package profile

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Fetch profiles the agent serving addr for most of a run of length d into path, in the
// background; the channel closes when the profile is written (or failed, said on stderr).
func Fetch(addr, path string, d time.Duration) <-chan struct{} {
	done := make(chan struct{})
	secs := max(1, int(d.Seconds())-1)
	go func() {
		defer close(done)
		if err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), path); err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
		}
	}()
	return done
}

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
