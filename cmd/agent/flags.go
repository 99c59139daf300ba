package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/pkg/steer"
)

// adminSocket is the running agent's control socket in its state directory: root only
// (mode 0600), and every request is attributed to the peer's uid and pid, which the
// kernel vouches for.
const adminSocket = "admin.sock"

// flagRequest is POST /v1/flags.
type flagRequest struct {
	Name     string         `json:"name,omitempty"`
	Selector steer.Selector `json:"selector"`
	For      string         `json:"for,omitempty"` // a Go duration; empty: until removed
	Reason   string         `json:"reason,omitempty"`
}

type peerKey struct{}

// serveAdmin answers the control socket until ctx ends.
func serveAdmin(ctx context.Context, stateDir string, st *steering, log *slog.Logger) error {
	path := filepath.Join(stateDir, adminSocket)
	// A socket left by an agent that died: the state directory is this agent's alone.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin socket: %w", err)
	}
	old := unix.Umask(0o077)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/flags", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, st.flags.List())
	})
	mux.HandleFunc("POST /v1/flags", func(w http.ResponseWriter, r *http.Request) {
		var req flagRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err))
			return
		}
		f := steer.Flag{Name: req.Name, Selector: req.Selector, Origin: steer.OriginOperator, By: peer(r), Reason: req.Reason}
		if req.For != "" {
			d, err := time.ParseDuration(req.For)
			if err != nil || d <= 0 {
				httpError(w, http.StatusBadRequest, fmt.Errorf("for %q: want a positive duration such as 30m", req.For))
				return
			}
			f.Until = time.Now().Add(d).UTC()
		}
		added, err := st.flags.Add(f)
		if err != nil {
			httpError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusCreated, added)
	})
	mux.HandleFunc("DELETE /v1/flags/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := st.flags.Remove(r.PathValue("name"), peer(r)); err != nil {
			httpError(w, http.StatusNotFound, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerOf(c))
		},
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	defer os.Remove(path)
	log.Info("admin socket listening", "path", path)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}

// peerOf names the process at the other end of a Unix connection, as the kernel reports it.
func peerOf(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return "unknown"
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "unknown"
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil {
		return "unknown"
	}
	who := fmt.Sprintf("operator uid %d pid %d", cred.Uid, cred.Pid)
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cred.Pid)); err == nil {
		who += " (" + strings.TrimSpace(string(comm)) + ")"
	}
	return who
}

func peer(r *http.Request) string {
	s, _ := r.Context().Value(peerKey{}).(string)
	return s
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// socketClient talks to a running agent's socket at path; noAgent starts the error when
// nothing answers there.
func socketClient(path, noAgent string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", noAgent, path, err)
			}
			return c, nil
		}},
	}
}

// adminDo sends one request to the admin socket and decodes the answer into out (nil: none
// expected).
func adminDo(ctx context.Context, stateDir, method, path string, body, out any) error {
	return socketDo(ctx, filepath.Join(stateDir, adminSocket), "no running agent with steering answers (it needs a proxy)", method, path, body, out)
}

// socketDo sends one request to the socket at sock and decodes the answer into out.
func socketDo(ctx context.Context, sock, noAgent, method, path string, body, out any) error {
	c := socketClient(sock, noAgent)
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://vigil"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("the agent refused: %s", e.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// jsonLines writes items as JSON lines, the CLI's --json format.
func jsonLines[T any](w io.Writer, items []T) error {
	enc := json.NewEncoder(w)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return nil
}

func newFlagsCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "flags",
		Short: "List, add and remove the workloads a running agent steers into its proxy",
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", "/var/lib/vigil", "the running agent's state directory (its control socket is there)")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the flagged workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var flags []steer.Flag
			if err := adminDo(cmd.Context(), stateDir, http.MethodGet, "/v1/flags", nil, &flags); err != nil {
				return err
			}
			if asJSON {
				return jsonLines(cmd.OutOrStdout(), flags)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSELECTOR\tORIGIN\tBY\tUNTIL\tREASON")
			for _, f := range flags {
				until := "-"
				if !f.Until.IsZero() {
					until = f.Until.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, f.Selector, f.Origin, f.By, until, f.Reason)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "one JSON object per flag")

	var req flagRequest
	var uid int64
	add := &cobra.Command{
		Use:   "add (--cgroup PATH | --exe PATH | --uid N | --source CIDR) [--name NAME] [--for DURATION] [--reason TEXT]",
		Short: "Flag a workload: its new connections to governed servers go through the proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("uid") {
				if uid < 0 || uid > 1<<32-1 {
					return fmt.Errorf("--uid %d: out of range", uid)
				}
				u := uint32(uid)
				req.Selector.UID = &u
			}
			if err := req.Selector.Validate(); err != nil {
				return err
			}
			var f steer.Flag
			if err := adminDo(cmd.Context(), stateDir, http.MethodPost, "/v1/flags", req, &f); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "flagged %s as %s\n", f.Selector, f.Name)
			return nil
		},
	}
	add.Flags().StringVar(&req.Selector.Cgroup, "cgroup", "", "a cgroup v2 path (the 0:: line of /proc/PID/cgroup), with the cgroups below it")
	add.Flags().StringVar(&req.Selector.Exe, "exe", "", "an executable's absolute path")
	add.Flags().Int64Var(&uid, "uid", 0, "a user id")
	add.Flags().StringVar(&req.Selector.Source, "source", "", "a network of remote clients (10.1.2.0/24), steered when they reach a proxied server on this host")
	add.Flags().StringVar(&req.Name, "name", "", "the flag's name (default: made up)")
	add.Flags().StringVar(&req.For, "for", "", "expire after this long (e.g. 30m; default: until removed)")
	add.Flags().StringVar(&req.Reason, "reason", "", "why, for the trail")

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Unflag a workload: its new connections go where they dial",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminDo(cmd.Context(), stateDir, http.MethodDelete, "/v1/flags/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, add, remove)
	return cmd
}
