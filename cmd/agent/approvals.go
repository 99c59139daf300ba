package main

import (
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
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/audit"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
)

// controlSocket is the approval channel in the agent's state directory. Unlike the admin
// socket (steering, root only) it may be opened to a group of approvers: every request is
// attributed to the OS user the kernel reports for the peer (SO_PEERCRED), and the policy
// decides whether that user may approve.
const controlSocket = "control.sock"

// openApprovals opens the approval store under the state directory, signing grants with
// the agent's key, and keeps it swept until ctx ends.
func openApprovals(ctx context.Context, stateDir string, engine *policy.Engine, channels []approval.Channel, sink event.Sink, reg prometheus.Registerer, log *slog.Logger) (*approval.Store, error) {
	key, err := audit.LoadOrCreateKey(stateDir)
	if err != nil {
		return nil, fmt.Errorf("approvals: %w", err)
	}
	store, err := approval.Open(approval.Options{
		Dir: filepath.Join(stateDir, "approvals"), Key: key, Sink: sink, Registerer: reg, Logger: log,
		Channels: channels, Context: ctx,
		Authorize: func(approvers []string, a approval.Approver) bool {
			osUser, _ := strings.CutPrefix(a.Principal, "os:")
			return engine.Approves(approvers, policy.Approver{OSUser: osUser, UID: a.UID, Email: a.Email, Groups: a.Groups})
		},
	})
	if err != nil {
		return nil, err
	}
	store.Sweep()
	go store.Run(ctx, 5*time.Second)
	return store, nil
}

type approverKey struct{}

// decisionRequest is the body of POST /v1/approvals/{id}/approve and /deny.
type decisionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// listenControl opens the control socket, reachable by group when one is named. It is
// open before the proxies accept: the NOTICE of a held statement sends people to it.
func listenControl(stateDir, group string) (net.Listener, error) {
	path := filepath.Join(stateDir, controlSocket)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	old := unix.Umask(0o077)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if group == "" {
		return l, nil
	}
	g, err := user.LookupGroup(group)
	if err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		if err = os.Chown(path, -1, gid); err == nil {
			err = os.Chmod(path, 0o660)
		}
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: approvals.socket_group %s: %w", group, err)
	}
	return l, nil
}

// serveControl answers the control socket until ctx ends.
func serveControl(ctx context.Context, l net.Listener, store *approval.Store, log *slog.Logger) error {
	path := l.Addr().String()
	defer os.Remove(path)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/approvals", func(w http.ResponseWriter, r *http.Request) {
		list := store.List()
		for i := range list {
			// The list shows that a grant exists and its terms, not the grant itself.
			if g := list[i].Grant; g != nil {
				c := *g
				c.Signature = nil
				list[i].Grant = &c
			}
		}
		writeJSON(w, http.StatusOK, list)
	})
	decide := func(approve bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req decisionRequest
			dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
				httpError(w, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err))
				return
			}
			a, ok := r.Context().Value(approverKey{}).(approval.Approver)
			if !ok {
				httpError(w, http.StatusForbidden, errors.New("the kernel did not say who is connected"))
				return
			}
			do := store.Deny
			if approve {
				do = store.Approve
			}
			got, err := do(r.PathValue("id"), a, req.Reason)
			writeDecision(w, a, got, err)
		}
	}
	mux.HandleFunc("POST /v1/approvals/{id}/approve", decide(true))
	mux.HandleFunc("POST /v1/approvals/{id}/deny", decide(false))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if a, ok := approverOf(c); ok {
				return context.WithValue(ctx, approverKey{}, a)
			}
			return ctx
		},
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	log.Info("control socket listening", "path", path)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

// writeDecision answers an approve or deny: the request as it now stands (without its
// grant), or why the decision was not taken.
func writeDecision(w http.ResponseWriter, a approval.Approver, got approval.Request, err error) {
	switch {
	case errors.Is(err, approval.ErrUnknownRequest):
		httpError(w, http.StatusNotFound, err)
	case errors.Is(err, approval.ErrNotPending):
		httpError(w, http.StatusConflict, err)
	case errors.Is(err, approval.ErrSelfApproval), errors.Is(err, approval.ErrNotApprover), errors.Is(err, approval.ErrAlreadyVoted):
		httpError(w, http.StatusForbidden, fmt.Errorf("%s: %w", a.Principal, err))
	case err != nil:
		httpError(w, http.StatusInternalServerError, err)
	default:
		got.Grant = nil
		writeJSON(w, http.StatusOK, got)
	}
}

// approverOf names the OS user at the other end of a Unix connection, as the kernel
// reports it: os:NAME, or os:#UID for a uid without a name.
func approverOf(c net.Conn) (approval.Approver, bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return approval.Approver{}, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return approval.Approver{}, false
	}
	var cred *unix.Ucred
	if cerr := raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil || err != nil || cred == nil {
		return approval.Approver{}, false
	}
	uid := int32(cred.Uid)
	name := "#" + strconv.FormatUint(uint64(cred.Uid), 10)
	if u, err := user.LookupId(strconv.FormatUint(uint64(cred.Uid), 10)); err == nil {
		name = u.Username
	}
	return approval.Approver{Principal: "os:" + name, UID: &uid}, true
}

func newApprovalsCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List, approve and deny the statements a running agent's proxy holds for approval",
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", "/var/lib/vigil", "the running agent's state directory (its control socket is there)")
	socket := func() string { return filepath.Join(stateDir, controlSocket) }

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List approval requests, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var reqs []approval.Request
			if err := socketDo(cmd.Context(), socket(), "no running agent with a proxy answers", http.MethodGet, "/v1/approvals", nil, &reqs); err != nil {
				return err
			}
			if asJSON {
				return jsonLines(cmd.OutOrStdout(), reqs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tREQUESTER\tDATABASE\tRULE\tCREATED\tSTATEMENT")
			for _, r := range reqs {
				stmt := strings.Join(strings.Fields(r.Statement), " ")
				if len(stmt) > 60 {
					stmt = stmt[:57] + "..."
				}
				// A Bind's values are part of what is approved: shown whole.
				for i, p := range r.Params {
					sep := ", "
					if i == 0 {
						sep = "  with "
					}
					stmt += fmt.Sprintf("%s$%d=%s", sep, i+1, p)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, r.Requester, r.Database, r.Rule, r.Created.Local().Format(time.DateTime), stmt)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "one JSON object per request")

	decision := func(verb string) *cobra.Command {
		var reason string
		c := &cobra.Command{
			Use:   verb + " ID [--reason TEXT]",
			Short: strings.ToUpper(verb[:1]) + verb[1:] + " a request, as the OS user running this command",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var r approval.Request
				if err := socketDo(cmd.Context(), socket(), "no running agent with a proxy answers", http.MethodPost,
					"/v1/approvals/"+url.PathEscape(args[0])+"/"+verb, decisionRequest{Reason: reason}, &r); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", r.ID, r.Status)
				return nil
			},
		}
		c.Flags().StringVar(&reason, "reason", "", "why, for the trail")
		return c
	}
	cmd.AddCommand(list, decision("approve"), decision("deny"))
	return cmd
}
