package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// podMeta is the Kubernetes metadata of a container, as its runtime recorded it on the node.
// It is read without the API server, from files only the runtime and the kubelet write (a
// workload cannot forge them from inside its container):
//
//   - the OCI bundle's config.json: containerd keeps it at
//     /run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json (namespace
//     k8s.io under Kubernetes, moby under Docker), CRI-O and podman at
//     /run/containers/storage/overlay-containers/<id>/userdata/config.json. Its annotations
//     name the pod: io.kubernetes.cri.sandbox-{name,namespace,uid} (containerd) or
//     io.kubernetes.pod.{name,namespace,uid} (CRI-O), and the image the container runs:
//     io.kubernetes.cri.image-name (containerd) or io.kubernetes.cri-o.ImageName (CRI-O);
//   - the service account: the bundle's mount list says where on the node the kubelet put the
//     pod's token volume (the mount at /var/run/secrets/kubernetes.io/serviceaccount); the
//     token there is a JWT whose claims name the service account. Only the claims are decoded
//     (never verified, kept or logged): the file is the kubelet's, which is the trust anchor.
//     A pod with automountServiceAccountToken: false has no service account here.
type podMeta struct {
	Name, Namespace, UID string
	ServiceAccount       string
	Image                string
}

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// bundleConfigs are where runtimes keep a container's OCI config, relative to the host root,
// as globs with the container id substituted for {id}.
var bundleConfigs = []string{
	"run/containerd/io.containerd.runtime.v2.task/*/{id}/config.json",
	"run/containers/storage/overlay-containers/{id}/userdata/config.json",
}

// ociConfig is the part of an OCI runtime config (config.json) read here.
type ociConfig struct {
	Annotations map[string]string `json:"annotations"`
	Mounts      []struct {
		Destination string `json:"destination"`
		Source      string `json:"source"`
	} `json:"mounts"`
}

// readPodMeta finds the container's bundle under hostRoot and reads its pod metadata. It
// returns ErrNotFound when no runtime bundle of that id is visible (not a Kubernetes node,
// or the runtime's state directory is not mounted into the agent).
func readPodMeta(log *slog.Logger, hostRoot, containerID string) (podMeta, error) {
	for _, pattern := range bundleConfigs {
		matches, err := filepath.Glob(filepath.Join(hostRoot, strings.ReplaceAll(pattern, "{id}", containerID)))
		if err != nil {
			return podMeta{}, fmt.Errorf("finding the bundle of container %s: %w", containerID, err)
		}
		for _, path := range matches {
			b, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				continue // the container exited between glob and read
			}
			if err != nil {
				return podMeta{}, fmt.Errorf("reading the bundle of container %s: %w", containerID, err)
			}
			var cfg ociConfig
			if err := json.Unmarshal(b, &cfg); err != nil {
				return podMeta{}, fmt.Errorf("parsing %s: %w", path, err)
			}
			return podMetaOf(log, hostRoot, &cfg), nil
		}
	}
	return podMeta{}, fmt.Errorf("bundle of container %s: %w", containerID, ErrNotFound)
}

func podMetaOf(log *slog.Logger, hostRoot string, cfg *ociConfig) podMeta {
	a := cfg.Annotations
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := a[k]; v != "" {
				return v
			}
		}
		return ""
	}
	m := podMeta{
		Name:      first("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
		Namespace: first("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
		UID:       first("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
		Image:     first("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"),
	}
	src := ""
	for _, mnt := range cfg.Mounts {
		// Runtimes write the destination with or without the /var (a symlink to /run).
		if strings.TrimPrefix(mnt.Destination, "/var") == strings.TrimPrefix(serviceAccountDir, "/var") {
			src = mnt.Source
		}
	}
	if src == "" {
		return m
	}
	c, err := readTokenClaims(filepath.Join(hostRoot, src, "token"))
	if err != nil {
		log.Debug("no service account from the pod's token volume", "pod", m.Name, "err", err)
		return m
	}
	// The token must be this pod's: the kubelet writes one per pod, and a mismatch means the
	// bundle and the volume disagree, so neither is trusted for the account.
	if c.podUID != "" && m.UID != "" && c.podUID != m.UID {
		log.Warn("service account token belongs to another pod", "pod_uid", m.UID, "token_pod_uid", c.podUID)
		return m
	}
	m.ServiceAccount = c.serviceAccount
	if m.Namespace == "" {
		m.Namespace = c.namespace
	}
	return m
}

type tokenClaims struct {
	serviceAccount, namespace, podUID string
}

// readTokenClaims decodes the claims of a Kubernetes service account token: the bound tokens
// of current clusters ("kubernetes.io": {namespace, pod, serviceaccount}) and the legacy
// secret-based ones ("kubernetes.io/serviceaccount/service-account.name").
func readTokenClaims(path string) (tokenClaims, error) {
	f, err := os.Open(path)
	if err != nil {
		return tokenClaims{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return tokenClaims{}, fmt.Errorf("reading service account token: %w", err)
	}
	parts := strings.Split(strings.TrimSpace(string(b)), ".")
	if len(parts) != 3 {
		return tokenClaims{}, errors.New("service account token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return tokenClaims{}, fmt.Errorf("decoding service account token claims: %w", err)
	}
	var c struct {
		K8s struct {
			Namespace string `json:"namespace"`
			Pod       struct {
				UID string `json:"uid"`
			} `json:"pod"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
		LegacyName      string `json:"kubernetes.io/serviceaccount/service-account.name"`
		LegacyNamespace string `json:"kubernetes.io/serviceaccount/namespace"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return tokenClaims{}, fmt.Errorf("parsing service account token claims: %w", err)
	}
	out := tokenClaims{serviceAccount: c.K8s.ServiceAccount.Name, namespace: c.K8s.Namespace, podUID: c.K8s.Pod.UID}
	if out.serviceAccount == "" {
		out.serviceAccount, out.namespace = c.LegacyName, c.LegacyNamespace
	}
	return out, nil
}
