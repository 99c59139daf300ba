package identity

import (
	"strings"
	"testing"
)

const (
	cid  = "3f2a9c1d5e7b8f0a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b"
	cid2 = "b0a1f2e3d4c5b6a7980f1e2d3c4b5a69788f7e6d5c4b3a291807f6e5d4c3b2a1"
	pod  = "7d3e1f0a-2b4c-4d5e-8f9a-0b1c2d3e4f5a"
	podU = "7d3e1f0a_2b4c_4d5e_8f9a_0b1c2d3e4f5a"
)

// The cgroup paths below are the formats runtimes write, as /proc/PID/cgroup shows them.
func TestParseCgroupPath(t *testing.T) {
	tests := []struct {
		name, path string
		want       Container
	}{
		{"docker cgroupfs", "/docker/" + cid, Container{ID: cid}},
		{"docker systemd", "/system.slice/docker-" + cid + ".scope", Container{ID: cid, Runtime: "docker"}},
		{"containerd k8s systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/cri-containerd-" + cid + ".scope", Container{ID: cid, Runtime: "containerd", PodUID: pod}},
		{"containerd k8s systemd guaranteed", "/kubepods.slice/kubepods-pod" + podU + ".slice/cri-containerd-" + cid + ".scope", Container{ID: cid, Runtime: "containerd", PodUID: pod}},
		{"containerd k8s cgroupfs burstable", "/kubepods/burstable/pod" + pod + "/" + cid, Container{ID: cid, PodUID: pod}},
		{"containerd k8s cgroupfs guaranteed", "/kubepods/pod" + pod + "/" + cid, Container{ID: cid, PodUID: pod}},
		{"cri-o systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podU + ".slice/crio-" + cid + ".scope", Container{ID: cid, Runtime: "cri-o", PodUID: pod}},
		{"cri-o cgroupfs", "/kubepods/besteffort/pod" + pod + "/crio-" + cid, Container{ID: cid, Runtime: "cri-o", PodUID: pod}},
		{"cri-o conmon is not the container", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podU + ".slice/crio-conmon-" + cid + ".scope", Container{PodUID: pod}},
		{"podman rootful", "/machine.slice/libpod-" + cid + ".scope", Container{ID: cid, Runtime: "podman"}},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + cid + ".scope", Container{ID: cid, Runtime: "podman"}},
		{"podman container's own sub-cgroup", "/machine.slice/libpod-" + cid + ".scope/container", Container{ID: cid, Runtime: "podman"}},
		{"podman cgroupfs", "/libpod_parent/libpod-" + cid, Container{ID: cid, Runtime: "podman"}},
		{"kind node inside docker", "/docker/" + cid2 + "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + podU + ".slice/cri-containerd-" + cid + ".scope", Container{ID: cid, Runtime: "containerd", PodUID: pod}},
		{"ECS task", "/ecs/8a2f4b7c1d3e4f5a9b6c7d8e9f0a1b2c/" + cid, Container{ID: cid}},
		{"pod slice only (pause process moving)", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice", Container{PodUID: pod}},
		{"systemd service", "/system.slice/postgresql@15-main.service", Container{}},
		{"user session", "/user.slice/user-0.slice/session-3.scope", Container{}},
		{"root", "/", Container{}},
		{"32-hex sandbox dir is not a container id", "/process_api/d0b23b2a2f722144d11d318c516a77fa", Container{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCgroupPath(tt.path); got != tt.want {
				t.Errorf("ParseCgroupPath(%q) = %+v, want %+v", tt.path, got, tt.want)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name, content string
		want          Container
		wantV2        string
	}{
		{
			name:    "pure v2",
			content: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/cri-containerd-" + cid + ".scope\n",
			want:    Container{ID: cid, Runtime: "containerd", PodUID: pod},
			wantV2:  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/cri-containerd-" + cid + ".scope",
		},
		{
			name: "v1 docker",
			content: "12:pids:/docker/" + cid + "\n11:memory:/docker/" + cid + "\n" +
				"2:cpu,cpuacct:/docker/" + cid + "\n1:name=systemd:/docker/" + cid + "\n",
			want: Container{ID: cid},
		},
		{
			name: "hybrid: container only in v1 hierarchies",
			content: "9:name=systemd:/kubepods/burstable/pod" + pod + "/" + cid + "\n4:memory:/kubepods/burstable/pod" + pod + "/" + cid + "\n" +
				"0::/\n",
			want:   Container{ID: cid, PodUID: pod},
			wantV2: "/",
		},
		{
			name:    "host process (this machine's format)",
			content: "9:name=systemd:/\n4:memory:/process_api/d0b23b2a2f722144d11d318c516a77fa\n0::/\n",
			wantV2:  "/",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, v2 := ParseProcCgroup([]byte(tt.content))
			if got != tt.want || v2 != tt.wantV2 {
				t.Errorf("got %+v, %q; want %+v, %q", got, v2, tt.want, tt.wantV2)
			}
		})
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/mnt/cg\040two`); got != "/mnt/cg two" {
		t.Errorf("got %q", got)
	}
	if got := unescapeMountinfo(`/sys/fs/cgroup/unified`); got != "/sys/fs/cgroup/unified" {
		t.Errorf("got %q", got)
	}
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podU + ".slice/cri-containerd-" + cid + ".scope\n")
	f.Add("12:pids:/docker/" + cid + "\n0::/\n")
	f.Fuzz(func(t *testing.T, content string) {
		c, _ := ParseProcCgroup([]byte(content))
		if c.ID != "" && !containerRe.MatchString(c.ID) {
			t.Errorf("container id %q", c.ID)
		}
		if c.PodUID != "" && (len(c.PodUID) != 36 || strings.Contains(c.PodUID, "_")) {
			t.Errorf("pod uid %q", c.PodUID)
		}
	})
}
