package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLookupSelf(t *testing.T) {
	r := New(Options{})
	p, err := r.Lookup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if int(p.PID) != os.Getpid() || p.UID == nil || int(*p.UID) != os.Getuid() || p.Exe != exe {
		t.Fatalf("Lookup(self) = %+v (uid %v), want pid %d uid %d exe %s", p, p.UID, os.Getpid(), os.Getuid(), exe)
	}
	if !strings.HasPrefix(filepath.Base(exe), p.Comm) {
		t.Errorf("comm %q is not a prefix of %q", p.Comm, filepath.Base(exe))
	}
	// A cached answer is a copy: changing it does not change the cache.
	p.Comm = "changed"
	again, err := r.Lookup(os.Getpid())
	if err != nil || again.Comm == "changed" {
		t.Fatalf("second lookup = %+v, %v", again, err)
	}
}

// A process that exited is not answered from the cache: the cache key carries the start
// time, read fresh on every lookup.
func TestLookupExited(t *testing.T) {
	r := New(Options{})
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := r.Lookup(cmd.Process.Pid)
	if err != nil || p.Comm != "sleep" || p.Exe == "" {
		t.Fatalf("Lookup(sleep) = %+v, %v", p, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := r.Lookup(cmd.Process.Pid); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup(exited) error = %v, want ErrNotFound", err)
	}
}

func TestLookupKernelThread(t *testing.T) {
	p, err := New(Options{}).Lookup(2) // kthreadd
	if err != nil {
		t.Skipf("no kthreadd in this pid namespace: %v", err)
	}
	if p.Exe != "" || p.Comm != "kthreadd" {
		t.Errorf("Lookup(kthreadd) = %+v", p)
	}
}

// TestContainerInRealCgroup puts a real process into a real Kubernetes-shaped cgroup v2
// hierarchy, with a containerd bundle and kubelet token volume laid out as on a node, and
// checks that both a pid lookup and a cgroup id lookup find container, pod and account.
func TestContainerInRealCgroup(t *testing.T) {
	root, err := findCgroup2Mount()
	if errors.Is(err, ErrNotFound) {
		root = t.TempDir()
		if err := unix.Mount("none", root, "cgroup2", 0, ""); err != nil {
			t.Fatalf("mounting cgroup2: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	} else if err != nil {
		t.Fatal(err)
	}
	// A unique pod UID and container id per run: other tests may share the hierarchy.
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e12, 16)
	podUID := "5e0c1a2b-3c4d-4e5f-8a9b-" + strings.Repeat("0", 12-len(suffix)) + suffix
	id := strings.Repeat("a", 64-len(suffix)) + suffix
	rel := []string{
		"kubepods.slice",
		"kubepods.slice/kubepods-besteffort.slice",
		"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice",
		"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice/cri-containerd-" + id + ".scope",
	}
	for _, d := range rel {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	leaf := filepath.Join(root, rel[len(rel)-1])
	t.Cleanup(func() {
		for i := len(rel) - 1; i >= 2; i-- {
			os.Remove(filepath.Join(root, rel[i])) // the shared parents stay
		}
	})

	// The runtime's bundle and the kubelet's token volume, in their on-node formats.
	hostRoot := t.TempDir()
	tokenDir := "/var/lib/kubelet/pods/" + podUID + "/volumes/kubernetes.io~projected/kube-api-access-x7k2p"
	writeToken(t, filepath.Join(hostRoot, tokenDir, "token"), map[string]any{
		"aud": []string{"https://kubernetes.default.svc.cluster.local"},
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:payments:billing-api",
		"kubernetes.io": map[string]any{
			"namespace":      "payments",
			"pod":            map[string]string{"name": "billing-api-7c9d8f6b5-x2x9q", "uid": podUID},
			"serviceaccount": map[string]string{"name": "billing-api", "uid": "0b6e8a52-1c1f-4f43-9a57-5d0c4a1e7e11"},
		},
	})
	bundle := map[string]any{
		"ociVersion": "1.1.0",
		"process":    map[string]any{"args": []string{"/app/billing"}},
		"annotations": map[string]string{
			"io.kubernetes.cri.container-type":    "container",
			"io.kubernetes.cri.container-name":    "api",
			"io.kubernetes.cri.image-name":        "registry.example.com/billing-api:1.4.2",
			"io.kubernetes.cri.sandbox-id":        strings.Repeat("c", 64),
			"io.kubernetes.cri.sandbox-name":      "billing-api-7c9d8f6b5-x2x9q",
			"io.kubernetes.cri.sandbox-namespace": "payments",
			"io.kubernetes.cri.sandbox-uid":       podUID,
		},
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/kubelet/pods/" + podUID + "/etc-hosts"},
			{"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": tokenDir, "options": []string{"rbind", "rprivate", "ro"}},
		},
	}
	writeJSON(t, filepath.Join(hostRoot, "run/containerd/io.containerd.runtime.v2.task/k8s.io", id, "config.json"), bundle)

	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("moving the child into %s: %v", leaf, err)
	}

	r := New(Options{HostRoot: hostRoot, CgroupRoot: root})
	defer r.Close()
	p, err := r.Lookup(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.ContainerID != id || p.Pod != "billing-api-7c9d8f6b5-x2x9q" || p.Namespace != "payments" || p.ServiceAccount != "billing-api" || p.Comm != "sleep" {
		t.Errorf("Lookup = %+v", p)
	}

	// The cgroup id eBPF reports is the directory's inode number.
	var st unix.Stat_t
	if err := unix.Stat(leaf, &st); err != nil {
		t.Fatal(err)
	}
	path, err := r.CgroupPath(st.Ino)
	if err != nil || path != "/"+rel[len(rel)-1] {
		t.Fatalf("CgroupPath(%d) = %q, %v; want /%s", st.Ino, path, err, rel[len(rel)-1])
	}
	cp, err := r.CgroupIdentity(st.Ino)
	if err != nil || cp.ContainerID != id || cp.Pod != "billing-api-7c9d8f6b5-x2x9q" || cp.ServiceAccount != "billing-api" {
		t.Errorf("CgroupIdentity = %+v, %v", cp, err)
	}

	if got, err := r.cgroupPathByHandle(st.Ino); err != nil || got != path {
		t.Errorf("open_by_handle_at path = %q, %v; want %q", got, err, path)
	}

	// The walk, used where open_by_handle_at is refused, finds the same path.
	walker := New(Options{CgroupRoot: root})
	defer walker.Close()
	if err := walker.openCgroupRoot(); err != nil {
		t.Fatal(err)
	}
	if err := walker.walkCgroups(); err != nil {
		t.Fatal(err)
	}
	if got, ok := walker.cgroups.get(st.Ino); !ok || got != path {
		t.Errorf("walk found %q (%v), handle found %q", got, ok, path)
	}

	if _, err := r.CgroupPath(1 << 40); !errors.Is(err, ErrNotFound) {
		t.Errorf("CgroupPath(unknown) error = %v, want ErrNotFound", err)
	}
}

func writeToken(t *testing.T, path string, claims map[string]any) {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// The signature is opaque bytes here: the kubelet's file is the trust anchor, and the
	// resolver reads only the claims.
	tok := enc(map[string]string{"alg": "RS256", "kid": "k1"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("signature"))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
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

// CRI-O (and podman) keep the bundle elsewhere and name the pod with io.kubernetes.pod.*;
// clusters before bound tokens mounted a secret-based token with legacy claims.
func TestPodMetaCRIOLegacyToken(t *testing.T) {
	hostRoot := t.TempDir()
	id := strings.Repeat("d", 64)
	podUID := "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
	secretDir := "/var/lib/kubelet/pods/" + podUID + "/volumes/kubernetes.io~secret/default-token-4kq9z"
	writeToken(t, filepath.Join(hostRoot, secretDir, "token"), map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"kubernetes.io/serviceaccount/namespace": "legacy",
		"kubernetes.io/serviceaccount/secret.name":          "default-token-4kq9z",
		"kubernetes.io/serviceaccount/service-account.name": "reporting",
		"sub": "system:serviceaccount:legacy:reporting",
	})
	writeJSON(t, filepath.Join(hostRoot, "run/containers/storage/overlay-containers", id, "userdata/config.json"), map[string]any{
		"ociVersion": "1.0.2-dev",
		"annotations": map[string]string{
			"io.kubernetes.cri-o.ContainerType": "container",
			"io.kubernetes.pod.name":            "reports-0",
			"io.kubernetes.pod.namespace":       "legacy",
			"io.kubernetes.pod.uid":             podUID,
			"io.kubernetes.container.name":      "reports",
		},
		"mounts": []map[string]any{
			{"destination": "/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": secretDir},
		},
	})
	m, err := readPodMeta(slog.Default(), hostRoot, id)
	want := podMeta{Name: "reports-0", Namespace: "legacy", UID: podUID, ServiceAccount: "reporting"}
	if err != nil || m != want {
		t.Fatalf("readPodMeta = %+v, %v; want %+v", m, err, want)
	}
	if _, err := readPodMeta(slog.Default(), hostRoot, strings.Repeat("e", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing bundle: error %v, want ErrNotFound", err)
	}
}
