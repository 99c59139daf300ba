package identity

import (
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// apiServer answers GET /api/v1/pods as the Kubernetes API server does: a bearer token is
// required, the node's pods are selected with fieldSelector, and a refusal is a Status.
func apiServer(t *testing.T, token string, pods map[string]map[string]string, deny *atomic.Bool) (srv *httptest.Server, caFile, tokenFile string) {
	t.Helper()
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := func(code int, reason, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": msg, "code": code})
		}
		switch {
		case r.Method != http.MethodGet || r.URL.Path != "/api/v1/pods":
			status(http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		case r.Header.Get("Authorization") != "Bearer "+token:
			status(http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		case deny != nil && deny.Load():
			status(http.StatusForbidden, "Forbidden", `pods is forbidden: User "system:serviceaccount:vigil:vigil-agent" cannot list resource "pods" in API group "" at the cluster scope`)
		case r.URL.Query().Get("fieldSelector") != "spec.nodeName=node-1":
			status(http.StatusBadRequest, "BadRequest", "want this node's pods only")
		default:
			var items []any
			for uid, labels := range pods {
				items = append(items, map[string]any{
					"metadata": map[string]any{"name": "pod-" + uid[:4], "namespace": "payments", "uid": uid, "labels": labels},
					"spec":     map[string]any{"nodeName": "node-1"},
				})
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"kind": "PodList", "apiVersion": "v1", "metadata": map[string]any{"resourceVersion": "42"}, "items": items})
		}
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile, tokenFile
}

func waitLabels(t *testing.T, k *PodLabels, uid string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(podLabelsMinRefresh + 5*time.Second)
	for {
		if l, ok := k.Labels(uid); ok {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never got its labels", uid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPodLabels(t *testing.T) {
	const uid = "5e0c1a2b-3c4d-4e5f-8a9b-0123456789ab"
	var deny atomic.Bool
	srv, ca, token := apiServer(t, "s3cret-token", map[string]map[string]string{
		uid: {"app": "billing", "tier": "backend"},
	}, &deny)
	var errs atomic.Int32
	k, err := NewPodLabels(KubeAPI{Server: srv.URL, TokenFile: token, CAFile: ca, Node: "node-1"}, slog.New(slog.DiscardHandler), func() { errs.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if l := waitLabels(t, k, uid); l["app"] != "billing" || l["tier"] != "backend" {
		t.Errorf("labels %v", l)
	}
	if _, ok := k.Labels("00000000-0000-0000-0000-000000000000"); ok {
		t.Error("a pod that is not on the node has labels")
	}

	// A refusal keeps the last list and is counted.
	deny.Store(true)
	k.mu.Lock()
	k.fetched, k.tried = time.Time{}, time.Time{}
	k.mu.Unlock()
	k.Labels(uid)
	deadline := time.Now().Add(5 * time.Second)
	for errs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a refused list was not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l, ok := k.Labels(uid); !ok || l["app"] != "billing" {
		t.Errorf("after a refused refresh: %v, %v; want the last list", l, ok)
	}
}

func TestPodLabelsConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		api  KubeAPI
	}{
		{"no server", KubeAPI{Node: "n", CAFile: "/dev/null"}},
		{"no node", KubeAPI{Server: "https://10.96.0.1:443", CAFile: "/dev/null"}},
		{"no CA", KubeAPI{Server: "https://10.96.0.1:443", Node: "n", CAFile: filepath.Join(t.TempDir(), "missing")}},
		{"CA not PEM", KubeAPI{Server: "https://10.96.0.1:443", Node: "n", CAFile: "/dev/null"}},
	} {
		if _, err := NewPodLabels(tc.api, slog.New(slog.DiscardHandler), nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
