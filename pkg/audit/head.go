package audit

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Head is the signed head of one chain: the seq and hash of the last event the agent
// stored. The agent rewrites it after every flush, outside the store (and the ClickHouse
// exporter publishes it into the store once the store holds that event), so that a store
// cut short at the tail — the one tampering the chain alone cannot show — is detected:
// Verify finds the store ending before Head.Seq, or a different event there.
type Head struct {
	AgentID   string    `json:"agent_id"`
	ChainID   string    `json:"chain_id,omitempty"`
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature string    `json:"signature"` // hex Ed25519 over message()
}

// message is what the signature covers. A head of a chain with an id signs the id too
// (v2), so that it cannot be passed off as another chain's; v1 is for chains from before
// chain ids.
func (h *Head) message() []byte {
	b := make([]byte, 0, 160)
	if h.ChainID == "" {
		b = append(b, "vigil-head/v1\x00"...)
	} else {
		b = append(b, "vigil-head/v2\x00"...)
	}
	b = append(b, h.AgentID...)
	b = append(b, 0)
	if h.ChainID != "" {
		b = append(b, h.ChainID...)
		b = append(b, 0)
	}
	b = strconv.AppendUint(b, h.Seq, 10)
	b = append(b, 0)
	b = append(b, h.Hash...)
	b = append(b, 0)
	return h.Time.UTC().AppendFormat(b, time.RFC3339Nano)
}

func (h *Head) sign(key ed25519.PrivateKey) {
	h.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	h.Signature = hex.EncodeToString(ed25519.Sign(key, h.message()))
}

// Verify checks the head's signature with pub.
func (h *Head) Verify(pub ed25519.PublicKey) error {
	if h.KeyID != KeyID(pub) {
		return fmt.Errorf("head signed by key %s, not %s", h.KeyID, KeyID(pub))
	}
	sig, err := hex.DecodeString(h.Signature)
	if err != nil || !ed25519.Verify(pub, h.message(), sig) {
		return errors.New("head signature does not verify")
	}
	return nil
}

// ReadHead reads a head file.
func ReadHead(path string) (*Head, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading head: %w", err)
	}
	h, err := ParseHead(data)
	if err != nil {
		return nil, fmt.Errorf("reading head %s: %w", path, err)
	}
	return h, nil
}

// ParseHead decodes a head as the head file holds it.
func ParseHead(data []byte) (*Head, error) {
	h := new(Head)
	if err := json.Unmarshal(data, h); err != nil {
		return nil, err
	}
	return h, nil
}

// Chain names the head's chain as Verify reports it.
func (h *Head) Chain() string { return chainName(h.AgentID, h.ChainID) }

// chainName is how reports name a chain: agent id and chain id, or the agent id alone
// for a chain from before chain ids.
func chainName(agent, chain string) string {
	if chain == "" {
		return agent + "/(no chain id)"
	}
	return agent + "/" + chain
}

// writeHead replaces the head file. It is not fsynced: a crash can leave an older head
// (Verify then sees more events after it, which it reports as unsigned, not as tampering)
// or none, which the next start and Verify report; fsyncing it on every flush would double
// the cost of a flush for no stronger guarantee.
func writeHead(path string, h *Head) error {
	data, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding head: %w", err)
	}
	if err := writeFileAtomic(path, append(data, '\n'), 0o644, false); err != nil {
		return fmt.Errorf("writing head: %w", err)
	}
	return nil
}
