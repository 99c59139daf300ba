package health

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadyz(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	st := NewStatus()
	srv, err := Listen("127.0.0.1:0", reg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("no components: /readyz = %d, want 503", code)
	}
	st.Set("capture", Component{Required: true, Ready: false, Detail: "attaching"})
	st.Set("tls", Component{Required: false, Ready: false, Detail: "no be_tls_read symbol"})
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("capture not ready: /readyz = %d, want 503", code)
	}
	st.Set("capture", Component{Required: true, Ready: true, Items: []Item{{Name: "tcx/lo", OK: true}}})
	code, body := get("/readyz")
	if code != 200 {
		t.Fatalf("/readyz = %d, want 200 (optional component degraded only): %s", code, body)
	}
	var v struct {
		Ready      bool
		Components map[string]Component
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || !v.Ready || v.Components["capture"].Items[0].Name != "tcx/lo" {
		t.Fatalf("body %s: %v", body, err)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "vigil_test_total 3") {
		t.Fatalf("metrics: %s", body)
	}
}
