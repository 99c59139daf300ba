package testenv

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Pod is a Kubernetes pod's container as a node shows it to the agent: a real cgroup v2
// directory shaped as the kubelet's systemd driver names it, and under HostRoot the
// containerd bundle and the kubelet's service account volume, in their on-node formats.
type Pod struct {
	HostRoot    string
	UID         string
	ContainerID string
	Name        string // billing-api-7c9d8f6b5-x2x9q
	Namespace   string // payments
	Account     string // billing-api
	Image       string // registry.example.com/billing-api:1.4.2
	// Cgroup is the container's cgroup path from the hierarchy's root ("/kubepods.slice/…"),
	// Dir the directory, FD an open handle for SysProcAttr.CgroupFD.
	Cgroup, Dir string
	FD          int
}

// FakePod lays out a pod's container under the cgroup v2 hierarchy at cgroupRoot (ids unique
// per call, as other tests share the hierarchy) and removes it at the end of the test.
func FakePod(t testing.TB, cgroupRoot string) Pod {
	t.Helper()
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e12, 16)
	p := Pod{
		HostRoot:    t.TempDir(),
		UID:         "5e0c1a2b-3c4d-4e5f-8a9b-" + strings.Repeat("0", 12-len(suffix)) + suffix,
		ContainerID: strings.Repeat("a", 64-len(suffix)) + suffix,
		Name:        "billing-api-7c9d8f6b5-x2x9q",
		Namespace:   "payments",
		Account:     "billing-api",
		Image:       "registry.example.com/billing-api:1.4.2",
	}
	podSlice := "kubepods-besteffort-pod" + strings.ReplaceAll(p.UID, "-", "_") + ".slice"
	rel := []string{
		"kubepods.slice",
		"kubepods.slice/kubepods-besteffort.slice",
		"kubepods.slice/kubepods-besteffort.slice/" + podSlice,
		"kubepods.slice/kubepods-besteffort.slice/" + podSlice + "/cri-containerd-" + p.ContainerID + ".scope",
	}
	for _, d := range rel {
		if err := os.Mkdir(filepath.Join(cgroupRoot, d), 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	p.Cgroup = "/" + rel[len(rel)-1]
	p.Dir = filepath.Join(cgroupRoot, rel[len(rel)-1])
	fd, err := unix.Open(p.Dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.FD = fd
	t.Cleanup(func() {
		unix.Close(fd)
		for i := len(rel) - 1; i >= 2; i-- { // the shared parents stay
			for j := 0; j < 50 && os.Remove(filepath.Join(cgroupRoot, rel[i])) != nil; j++ {
				time.Sleep(20 * time.Millisecond) // its processes are still exiting
			}
		}
	})

	tokenDir := "/var/lib/kubelet/pods/" + p.UID + "/volumes/kubernetes.io~projected/kube-api-access-x7k2p"
	WriteToken(t, filepath.Join(p.HostRoot, tokenDir, "token"), map[string]any{
		"aud": []string{"https://kubernetes.default.svc.cluster.local"},
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:" + p.Namespace + ":" + p.Account,
		"kubernetes.io": map[string]any{
			"namespace":      p.Namespace,
			"pod":            map[string]string{"name": p.Name, "uid": p.UID},
			"serviceaccount": map[string]string{"name": p.Account, "uid": "0b6e8a52-1c1f-4f43-9a57-5d0c4a1e7e11"},
		},
	})
	WriteJSON(t, filepath.Join(p.HostRoot, "run/containerd/io.containerd.runtime.v2.task/k8s.io", p.ContainerID, "config.json"), map[string]any{
		"ociVersion": "1.1.0",
		"process":    map[string]any{"args": []string{"/app/billing"}},
		"annotations": map[string]string{
			"io.kubernetes.cri.container-type":    "container",
			"io.kubernetes.cri.container-name":    "api",
			"io.kubernetes.cri.image-name":        p.Image,
			"io.kubernetes.cri.sandbox-id":        strings.Repeat("c", 64),
			"io.kubernetes.cri.sandbox-name":      p.Name,
			"io.kubernetes.cri.sandbox-namespace": p.Namespace,
			"io.kubernetes.cri.sandbox-uid":       p.UID,
		},
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/kubelet/pods/" + p.UID + "/etc-hosts"},
			{"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": tokenDir, "options": []string{"rbind", "rprivate", "ro"}},
		},
	})
	return p
}

// Enter moves the process pid into the pod's container.
func (p Pod) Enter(t testing.TB, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.Dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("moving %d into %s: %v", pid, p.Dir, err)
	}
}

// WriteToken writes a service account token with these claims, as the kubelet does. The
// signature is opaque bytes: the kubelet's file is the trust anchor, and the agent reads
// only the claims.
func WriteToken(t testing.TB, path string, claims map[string]any) {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tok := enc(map[string]string{"alg": "RS256", "kid": "k1"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("signature"))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

// WriteJSON writes v as JSON at path, creating its directory.
func WriteJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
