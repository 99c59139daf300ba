// Package approval holds statements that a policy rule sends to require_approval until people
// allowed to approve them say so. A Request is one statement waiting (or refused, to be
// retried); the Store keeps requests durably in the agent's state directory, so that an agent
// restart loses none; an approval ends in a Grant, signed with the agent's Ed25519 key and
// bound to the requester, the database and the exact statement (its text and parameters).
// Channels (the generic Webhook) tell approvers of new requests; their decisions come back
// signed, and VerifySigned checks them.
//
// A grant verifies anywhere the agent's public key is known (Verify needs no shared state),
// but how many times it has been used is recorded by the agent that issued it: the use count
// is per agent.
package approval

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Refusals. Each is a distinct error so that the trail and the tests can tell them apart.
var (
	ErrForged         = errors.New("grant signature does not verify (forged or altered)")
	ErrUnknownKey     = errors.New("grant is signed by a key this agent does not know")
	ErrExpired        = errors.New("grant has expired")
	ErrReplayed       = errors.New("grant has no uses left (replayed)")
	ErrOtherStatement = errors.New("grant is for another statement (text or parameters differ)")
	ErrOtherRequester = errors.New("grant is for another requester")
	ErrOtherDatabase  = errors.New("grant is for another database")
	ErrSelfApproval   = errors.New("the requester cannot approve their own statement")
	ErrNotApprover    = errors.New("not among the rule's approvers")
	ErrAlreadyVoted   = errors.New("this approver has already approved the request")
	ErrNotPending     = errors.New("request is no longer pending")
	ErrUnknownRequest = errors.New("no such approval request")
)

// grantDomain prefixes the signed bytes, so that a grant signature can never be taken for a
// signature over a trail anchor made with the same key, nor the other way round.
const grantDomain = "vigil-grant-v1\n"

// Grant is an approval: who may run which statement on which database, until when and how
// many times. Signature covers the canonical encoding of every other field.
type Grant struct {
	Version     int    `json:"v"`
	RequestID   string `json:"request_id"`
	Requester   string `json:"requester"`
	Database    string `json:"database"`
	Fingerprint string `json:"fingerprint"`
	// StatementSHA256 is StatementHash of the exact text and parameters.
	StatementSHA256 string    `json:"statement_sha256"`
	Approvers       []string  `json:"approvers"`
	Issued          time.Time `json:"issued"`
	Expires         time.Time `json:"expires"`
	Uses            int       `json:"uses"`
	KeyID           string    `json:"key_id"`
	Signature       []byte    `json:"signature,omitempty"`
}

// canonical is what the signature covers: the domain, then the grant's JSON without its
// signature, times in UTC (encoding/json writes fields in declaration order, so the bytes
// depend on the values alone).
func (g Grant) canonical() ([]byte, error) {
	g.Signature = nil
	g.Issued, g.Expires = g.Issued.UTC(), g.Expires.UTC()
	b, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encoding grant: %w", err)
	}
	return append([]byte(grantDomain), b...), nil
}

// Sign fills KeyID and Signature.
func (g *Grant) Sign(key ed25519.PrivateKey, keyID string) error {
	g.KeyID = keyID
	msg, err := g.canonical()
	if err != nil {
		return err
	}
	g.Signature = ed25519.Sign(key, msg)
	return nil
}

// Verify checks the grant's signature against the known public keys (by key id) and its
// expiry. It needs nothing but the keys: any agent can verify another's grants.
func Verify(g Grant, keys map[string]ed25519.PublicKey, now time.Time) error {
	pub, ok := keys[g.KeyID]
	if !ok {
		return ErrUnknownKey
	}
	msg, err := g.canonical()
	if err != nil {
		return err
	}
	if len(g.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, g.Signature) {
		return ErrForged
	}
	if !now.Before(g.Expires) {
		return ErrExpired
	}
	return nil
}

// Permits checks that a verified grant is for this requester, database and statement.
func (g Grant) Permits(requester, database, statementHash string) error {
	switch {
	case g.Requester != requester:
		return ErrOtherRequester
	case g.Database != database:
		return ErrOtherDatabase
	case g.StatementSHA256 != statementHash:
		return ErrOtherStatement
	}
	return nil
}

// StatementHash is the hex SHA-256 that binds a grant to one exact statement: the text's
// length as 8 bytes big-endian and the text, then each parameter as its format (one byte: 0
// text, 1 binary), a 4-byte big-endian length (0xFFFFFFFF for NULL) and its bytes. formats
// follow the Bind message's rule: none means every parameter is text, one applies to all,
// else one per parameter. The lengths keep a text from passing for another text with
// parameters; the formats keep the same bytes in the other format (a different value) from
// passing for the approved one.
func StatementHash(text string, params [][]byte, formats []int16) string {
	h := sha256.New()
	var tl [8]byte
	binary.BigEndian.PutUint64(tl[:], uint64(len(text)))
	h.Write(tl[:])
	h.Write([]byte(text))
	var n [5]byte
	for i, p := range params {
		var f int16
		switch {
		case len(formats) == 1:
			f = formats[0]
		case i < len(formats):
			f = formats[i]
		}
		n[0] = byte(f)
		l := uint32(len(p))
		if p == nil {
			l = 0xFFFFFFFF
		}
		binary.BigEndian.PutUint32(n[1:], l)
		h.Write(n[:])
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
