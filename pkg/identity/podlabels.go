package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Pod labels are kept only by the Kubernetes API server: neither the runtime's bundle nor the
// kubelet's volumes on the node carry them. PodLabels lists the pods of the agent's node
// (one request, fieldSelector spec.nodeName) with the agent's service account and keeps their
// labels by pod UID. A lookup never waits for the API server: it answers from the cache and,
// for a pod the cache does not know, asks for a refresh in the background, so a workload
// selector on labels matches a new pod from the scan after the refresh.

const (
	// podLabelsRefresh is how often the node's pods are listed again when every pod looked up
	// is known; labels edited on a running pod are seen within it.
	podLabelsRefresh = time.Minute
	// podLabelsMinRefresh bounds the refreshes that unknown pods cause.
	podLabelsMinRefresh = 5 * time.Second
	podLabelsTimeout    = 10 * time.Second
	// podListLimit bounds the response read: a node runs at most a few hundred pods.
	podListLimit = 64 << 20
)

// In-cluster locations of the service account's credentials.
const (
	serviceAccountToken = serviceAccountDir + "/token"
	serviceAccountCA    = serviceAccountDir + "/ca.crt"
)

// KubeAPI says how to reach the API server.
type KubeAPI struct {
	// Server is the API server's base URL ("https://10.96.0.1:443").
	Server string
	// TokenFile holds the bearer token; read at every request, as the kubelet rotates it.
	TokenFile string
	// CAFile holds the certificates that sign the API server's.
	CAFile string
	// Node is this node's name, whose pods are listed.
	Node string
}

// InCluster returns the API server of the cluster the agent runs in, as Kubernetes tells
// every pod (KUBERNETES_SERVICE_HOST/PORT and the service account volume), with node the
// agent's node; ok is false outside a pod.
func InCluster(node string) (api KubeAPI, ok bool) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return KubeAPI{}, false
	}
	return KubeAPI{Server: "https://" + net.JoinHostPort(host, port), TokenFile: serviceAccountToken,
		CAFile: serviceAccountCA, Node: node}, true
}

// PodLabels caches the labels of the node's pods. Safe for concurrent use.
type PodLabels struct {
	api    KubeAPI
	client *http.Client
	log    *slog.Logger
	// onError counts failed refreshes (a metric); may be nil.
	onError func()

	mu         sync.Mutex
	byUID      map[string]map[string]string
	fetched    time.Time // last successful list
	tried      time.Time // last attempt
	refreshing bool
	wanted     bool // an unknown pod was looked up since the last attempt
}

// NewPodLabels checks api and prepares the client; nothing is requested until a lookup.
func NewPodLabels(api KubeAPI, log *slog.Logger, onError func()) (*PodLabels, error) {
	if _, err := url.Parse(api.Server); err != nil || api.Server == "" {
		return nil, fmt.Errorf("kubernetes API server %q: want a URL", api.Server)
	}
	if api.Node == "" {
		return nil, errors.New("pod labels: the node name is unknown (set identity.node_name, or NODE_NAME from the downward API)")
	}
	pem, err := os.ReadFile(api.CAFile)
	if err != nil {
		return nil, fmt.Errorf("pod labels: the API server's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("pod labels: %s holds no PEM certificate", api.CAFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &PodLabels{api: api, log: log, onError: onError,
		client: &http.Client{Transport: tr, Timeout: podLabelsTimeout}}, nil
}

// Labels returns the labels of the pod with this UID as last listed, and whether the pod was
// in the list. It never blocks on the API server.
func (k *PodLabels) Labels(podUID string) (map[string]string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.byUID[podUID]
	now := time.Now()
	if !ok {
		k.wanted = true
	}
	due := now.Sub(k.fetched) >= podLabelsRefresh || (k.wanted && now.Sub(k.tried) >= podLabelsMinRefresh)
	if due && !k.refreshing {
		k.refreshing = true
		k.tried = now
		k.wanted = false
		go k.refresh()
	}
	return l, ok
}

// refresh lists the node's pods and replaces the cache; on failure the old cache stays.
func (k *PodLabels) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), podLabelsTimeout)
	defer cancel()
	byUID, err := k.list(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refreshing = false
	if err != nil {
		k.log.Warn("listing this node's pods for their labels; selectors on labels use the last list", "node", k.api.Node, "err", err)
		if k.onError != nil {
			k.onError()
		}
		return
	}
	k.byUID, k.fetched = byUID, time.Now()
}

// podList is the part of a v1 PodList read here.
type podList struct {
	Items []struct {
		Metadata struct {
			UID    string            `json:"uid"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	} `json:"items"`
}

func (k *PodLabels) list(ctx context.Context) (map[string]map[string]string, error) {
	token, err := os.ReadFile(k.api.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the service account token: %w", err)
	}
	u := strings.TrimSuffix(k.api.Server, "/") + "/api/v1/pods?" +
		url.Values{"fieldSelector": {"spec.nodeName=" + k.api.Node}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, podListLimit))
	if err != nil {
		return nil, fmt.Errorf("reading the pod list: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// The API server explains itself in a Status object; a 403 means the agent's
		// service account may not list pods (the DaemonSet's ClusterRole grants it).
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &st)
		return nil, fmt.Errorf("GET /api/v1/pods: %s: %s", resp.Status, st.Message)
	}
	var pl podList
	if err := json.Unmarshal(body, &pl); err != nil {
		return nil, fmt.Errorf("decoding the pod list: %w", err)
	}
	byUID := make(map[string]map[string]string, len(pl.Items))
	for _, it := range pl.Items {
		if it.Metadata.UID != "" {
			byUID[it.Metadata.UID] = it.Metadata.Labels
		}
	}
	return byUID, nil
}
