package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Files in the agent's state directory.
const (
	KeyFile    = "agent.key" // Ed25519 private key, PKCS#8 PEM, mode 0600
	PubKeyFile = "agent.pub" // its public key, PKIX PEM: what a verifier needs
	HeadFile   = "head.json" // the signed head of the trail, rewritten on every flush
	ChainFile  = "chain.id"  // the id of the chain this state directory writes
)

// KeyID names a public key in anchors and head files: the first 8 bytes of its SHA-256,
// in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// LoadOrCreateChainID returns the id of the chain that dir's trail writes, creating one
// with a new state directory. The id comes with the state directory, not the agent id:
// a fresh state directory starts again at seq 1, and its chain must not be taken for the
// one before it. It is created before the key, so a state directory with a key and no
// chain id is one from before chain ids: its chain goes on with the empty id, so that it
// stays one chain.
func LoadOrCreateChainID(dir string) (string, error) {
	path := filepath.Join(dir, ChainFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(data))
		if !chainIDRe.MatchString(id) {
			return "", fmt.Errorf("%s: %q is not a chain id (32 hex digits)", path, id)
		}
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("reading the chain id: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating state directory: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating a chain id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if err := writeFileAtomic(path, []byte(id+"\n"), 0o644, true); err != nil {
		return "", fmt.Errorf("writing the chain id: %w", err)
	}
	return id, nil
}

var chainIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// LoadOrCreateKey returns the agent's signing key from dir, generating it on first start.
// The private key never leaves dir; agent.pub beside it is for verifiers.
func LoadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err := parsePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		// Restore the public half if someone removed it.
		if _, err := os.Stat(filepath.Join(dir, PubKeyFile)); errors.Is(err, os.ErrNotExist) {
			if err := writePublicKey(dir, key.Public().(ed25519.PublicKey)); err != nil {
				return nil, err
			}
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("reading signing key: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding signing key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600, true); err != nil {
		return nil, fmt.Errorf("writing signing key: %w", err)
	}
	if err := writePublicKey(dir, pub); err != nil {
		return nil, err
	}
	return key, nil
}

func writePublicKey(dir string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("encoding public key: %w", err)
	}
	path := filepath.Join(dir, PubKeyFile)
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644, true); err != nil {
		return fmt.Errorf("writing public key: %w", err)
	}
	return nil
}

func parsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want Ed25519", k)
	}
	return key, nil
}

// LoadPublicKey reads a public key written as agent.pub.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: not a PEM public key", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, want Ed25519", path, k)
	}
	return pub, nil
}

// LoadTrust reads what Verify needs from an agent's state directory: the public key and
// the head file. A missing head file gives no head (no flush yet, or it was removed:
// Verify then warns that it cannot check the tail).
func LoadTrust(dir string) (Trust, error) {
	pub, err := LoadPublicKey(filepath.Join(dir, PubKeyFile))
	if err != nil {
		return Trust{}, err
	}
	t := Trust{Keys: []ed25519.PublicKey{pub}}
	head, err := ReadHead(filepath.Join(dir, HeadFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return Trust{}, err
	default:
		t.Heads = append(t.Heads, head)
	}
	return t, nil
}

// anchorMessage is what an anchor's signature covers: the agent, the anchor's seq and
// the hash of the event before it — which through the chain covers every event before.
func anchorMessage(agentID string, seq uint64, prevHash string) []byte {
	b := make([]byte, 0, 64+len(agentID)+len(prevHash))
	b = append(b, "vigil-anchor/v1\x00"...)
	b = append(b, agentID...)
	b = append(b, 0)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, 0)
	return append(b, prevHash...)
}

// writeFileAtomic replaces path with data through a temporary file and a rename, so a
// reader never sees half a file. sync also makes it durable (keys must be).
func writeFileAtomic(path string, data []byte, perm os.FileMode, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if sync {
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	return nil
}
