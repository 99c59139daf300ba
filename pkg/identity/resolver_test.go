package identity

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testenv"
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
	pod := testenv.FakePod(t, root)
	api, ca, token := apiServer(t, "s3cret-token", map[string]map[string]string{pod.UID: {"app": "billing"}}, nil)
	labels, err := NewPodLabels(KubeAPI{Server: api.URL, TokenFile: token, CAFile: ca, Node: "node-1"}, slog.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pod.Enter(t, cmd.Process.Pid)

	r := New(Options{HostRoot: pod.HostRoot, CgroupRoot: root, PodLabels: labels})
	defer r.Close()
	p, err := r.Lookup(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.ContainerID != pod.ContainerID || p.Pod != pod.Name || p.Namespace != pod.Namespace || p.ServiceAccount != pod.Account || p.Comm != "sleep" ||
		p.Image != pod.Image {
		t.Errorf("Lookup = %+v", p)
	}
	// Labels come from the API server, asked in the background: a later lookup has them.
	for deadline := time.Now().Add(10 * time.Second); p.Labels["app"] != "billing"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("labels never arrived: %+v", p)
		}
		if p, err = r.Lookup(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}

	// The cgroup id eBPF reports is the directory's inode number.
	var st unix.Stat_t
	if err := unix.Stat(pod.Dir, &st); err != nil {
		t.Fatal(err)
	}
	path, err := r.CgroupPath(st.Ino)
	if err != nil || path != pod.Cgroup {
		t.Fatalf("CgroupPath(%d) = %q, %v; want %s", st.Ino, path, err, pod.Cgroup)
	}
	cp, err := r.CgroupIdentity(st.Ino)
	if err != nil || cp.ContainerID != pod.ContainerID || cp.Pod != pod.Name || cp.ServiceAccount != pod.Account || cp.Labels["app"] != "billing" {
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

// CRI-O (and podman) keep the bundle elsewhere and name the pod with io.kubernetes.pod.*;
// clusters before bound tokens mounted a secret-based token with legacy claims.
func TestPodMetaCRIOLegacyToken(t *testing.T) {
	hostRoot := t.TempDir()
	id := strings.Repeat("d", 64)
	podUID := "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
	secretDir := "/var/lib/kubelet/pods/" + podUID + "/volumes/kubernetes.io~secret/default-token-4kq9z"
	testenv.WriteToken(t, filepath.Join(hostRoot, secretDir, "token"), map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"kubernetes.io/serviceaccount/namespace": "legacy",
		"kubernetes.io/serviceaccount/secret.name":          "default-token-4kq9z",
		"kubernetes.io/serviceaccount/service-account.name": "reporting",
		"sub": "system:serviceaccount:legacy:reporting",
	})
	testenv.WriteJSON(t, filepath.Join(hostRoot, "run/containers/storage/overlay-containers", id, "userdata/config.json"), map[string]any{
		"ociVersion": "1.0.2-dev",
		"annotations": map[string]string{
			"io.kubernetes.cri-o.ContainerType": "container",
			"io.kubernetes.pod.name":            "reports-0",
			"io.kubernetes.pod.namespace":       "legacy",
			"io.kubernetes.pod.uid":             podUID,
			"io.kubernetes.container.name":      "reports",
			"io.kubernetes.cri-o.ImageName":     "quay.io/acme/reports:2.0",
		},
		"mounts": []map[string]any{
			{"destination": "/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": secretDir},
		},
	})
	m, err := readPodMeta(slog.Default(), hostRoot, id)
	want := podMeta{Name: "reports-0", Namespace: "legacy", UID: podUID, ServiceAccount: "reporting", Image: "quay.io/acme/reports:2.0"}
	if err != nil || m != want {
		t.Fatalf("readPodMeta = %+v, %v; want %+v", m, err, want)
	}
	if _, err := readPodMeta(slog.Default(), hostRoot, strings.Repeat("e", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing bundle: error %v, want ErrNotFound", err)
	}
}
