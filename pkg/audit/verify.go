package audit

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// Kind names what Verify found.
type Kind string

// Problems: the trail is not what the agent wrote.
const (
	// KindMissing: seqs absent from the chain that no gap event accounts for — deleted.
	KindMissing Kind = "missing"
	// KindBrokenLink: the event's prev_hash is not the hash of the event before it — the
	// one before was replaced (content and hash rewritten), or this one was inserted.
	KindBrokenLink Kind = "broken_link"
	// KindAltered: the event's hash does not match its content.
	KindAltered Kind = "altered"
	// KindReordered: the event comes after a higher seq, into a place the chain had
	// already passed.
	KindReordered Kind = "reordered"
	// KindDuplicate: a seq already seen.
	KindDuplicate Kind = "duplicate"
	// KindBadSignature: an anchor whose signature does not verify.
	KindBadSignature Kind = "bad_signature"
	// KindUnknownKey: an anchor signed by a key that is not among the trusted keys.
	KindUnknownKey Kind = "unknown_key"
	// KindTruncated: the store ends before the seq the signed head says the agent stored.
	KindTruncated Kind = "truncated"
	// KindHeadMismatch: the event at the head's seq is not the one the head signed.
	KindHeadMismatch Kind = "head_mismatch"
	// KindBadHead: a head whose signature does not verify, or made with a key that is not
	// trusted; that head checks nothing.
	KindBadHead Kind = "bad_head"
)

// Warnings: the trail is what the agent wrote, with limits worth knowing.
const (
	// KindGap: the agent itself recorded a loss (a full queue, a spool over its cap, a
	// crash that lost a tail). Part of the chain, so legitimate — but events are missing.
	KindGap Kind = "gap"
	// KindUnsigned: events after the last signature (the last valid anchor or the head):
	// a cut among them would not show. A crash between a store write and the head write
	// leaves a few; many mean the head file is stale or missing.
	KindUnsigned Kind = "unsigned"
	// KindStartsLate: the agent's first stored event is not seq 1. Normal for a local
	// store whose oldest segments were reclaimed; for a store of record it means deleted
	// history.
	KindStartsLate Kind = "starts_late"
	// KindNoHead: no signed head of the chain (or no key to check one with), so a cut at
	// the end of the chain was not checked. Verify --strict fails on it.
	// KindNoKey: no public key was given, so no signature was checked. Verify --strict
	// fails on it.
	KindNoHead Kind = "no_head"
	KindNoKey  Kind = "no_key"
)

var warnings = map[Kind]bool{KindGap: true, KindUnsigned: true, KindStartsLate: true, KindNoHead: true, KindNoKey: true}

// Problem is one finding, in a chain at the seq where it shows.
type Problem struct {
	AgentID string `json:"agent_id"`
	ChainID string `json:"chain_id,omitempty"`
	Seq     uint64 `json:"seq"`
	Kind    Kind   `json:"kind"`
	Warning bool   `json:"warning,omitempty"`
	Detail  string `json:"detail"`
}

func (p Problem) String() string {
	level := "ERROR"
	if p.Warning {
		level = "warning"
	}
	if p.AgentID == "" && p.ChainID == "" {
		return fmt.Sprintf("%s %s: %s", level, p.Kind, p.Detail)
	}
	return fmt.Sprintf("%s chain %s seq %d %s: %s", level, chainName(p.AgentID, p.ChainID), p.Seq, p.Kind, p.Detail)
}

// ChainSummary describes one chain as Verify read it.
type ChainSummary struct {
	AgentID string `json:"agent_id"`
	ChainID string `json:"chain_id"`
	// KeyID is the key the chain's chain event or first anchor names.
	KeyID    string `json:"key_id,omitempty"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Events   uint64 `json:"events"`
	Anchors  uint64 `json:"anchors"`
	Gaps     uint64 `json:"gaps"`
	Lost     uint64 `json:"lost"` // the sum of the gap events' Lost
	// UnsizedGaps are gap events whose loss the agent could not count (Lost 0): a
	// restart's window, a ring that overflowed while no agent read it.
	UnsizedGaps uint64 `json:"unsized_gaps"`
	SignedTo    uint64 `json:"signed_to"` // last seq covered by a valid anchor or the head
	// TailChecked: a trusted signed head of the chain was checked against the store, so a
	// cut at its end would show (up to that head's seq).
	TailChecked bool `json:"tail_checked"`
}

// Name is how reports name the chain.
func (c ChainSummary) Name() string { return chainName(c.AgentID, c.ChainID) }

// maxProblems bounds a report on a badly damaged store; the rest are only counted.
const maxProblems = 10000

// Report is Verify's result.
type Report struct {
	Chains   []ChainSummary `json:"chains"`
	Problems []Problem      `json:"problems"`
	Omitted  int            `json:"omitted,omitempty"` // problems beyond maxProblems
}

// OK reports whether Verify found nothing but warnings.
func (r *Report) OK() bool {
	if r.Omitted > 0 {
		return false
	}
	for _, p := range r.Problems {
		if !p.Warning {
			return false
		}
	}
	return true
}

// Unchecked lists what Verify could not check for want of a key or a head (the no_key
// and no_head warnings): verify --strict fails unless it is empty.
func (r *Report) Unchecked() []Problem {
	var out []Problem
	for _, p := range r.Problems {
		if p.Kind == KindNoKey || p.Kind == KindNoHead {
			out = append(out, p)
		}
	}
	return out
}

func (r *Report) add(c chainKey, seq uint64, kind Kind, format string, args ...any) {
	if len(r.Problems) >= maxProblems {
		r.Omitted++
		return
	}
	r.Problems = append(r.Problems, Problem{AgentID: c.agent, ChainID: c.chain, Seq: seq, Kind: kind, Warning: warnings[kind], Detail: fmt.Sprintf(format, args...)})
}

// chainKey identifies a chain: several chains can share an agent id.
type chainKey struct{ agent, chain string }

// declaredRange finds the seq range a gap event says was lost ("... seq 120..245 ...").
// Gap events for queue overflow name none: those events never got a seq.
var declaredRange = regexp.MustCompile(`seq (\d+)\.\.(\d+)`)

type seqRange struct{ from, to uint64 }

// gapRange is the seq range a gap event names as lost, if it names one.
func gapRange(e *event.Event) (seqRange, bool) {
	m := declaredRange.FindStringSubmatch(e.Detail)
	if m == nil {
		return seqRange{}, false
	}
	from, err1 := strconv.ParseUint(m[1], 10, 64)
	to, err2 := strconv.ParseUint(m[2], 10, 64)
	if err1 != nil || err2 != nil || from > to {
		return seqRange{}, false
	}
	return seqRange{from, to}, true
}

// chain is Verify's state for one chain.
type chain struct {
	key      chainKey
	sum      ChainSummary
	lastHash string // stored hash of the event at sum.LastSeq
	missing  []seqRange
	declared []seqRange
	heads    []*Head
	atHead   map[uint64]string // stored hashes of the events at the heads' seqs, once seen
}

// Trust is what Verify checks a trail against, given by the verifier rather than read
// from the store being checked.
type Trust struct {
	// Keys are the trusted public keys (agent.pub of each agent): every anchor and head
	// must be signed by one of them. None: no signature is checked (a no_key warning).
	Keys []ed25519.PublicKey
	// Heads are signed heads, any number per chain (head files, heads published in the
	// store). Each whose signature verifies with a trusted key is checked against the
	// store; a chain without one gets a no_head warning.
	Heads []*Head
}

// Verify reads every event of r and checks each chain — events are grouped by (agent_id,
// chain_id), so chains that share an agent id are checked apart:
//
//   - every event's hash is the SHA-256 of its canonical encoding (else altered);
//   - seqs rise by one (a seq lower than one seen is reordered if the chain skipped it,
//     else duplicate; a seq seen twice in a row is duplicate); skipped seqs are missing
//     unless a gap event in the chain names them ("seq a..b"), which makes them a
//     warning;
//   - each event's prev_hash is the hash of the event before (else broken_link);
//   - each anchor's signature verifies with the trusted key it names, over (agent, seq,
//     prev_hash) (else bad_signature, or unknown_key for a key not trusted);
//   - with a trusted head of the chain: the store reaches head.Seq and the event there
//     has head.Hash (else truncated / head_mismatch).
//
// Events after the last anchor or head are reported as unsigned (a warning), because
// removing some of them from the end cannot be told from their never being written. What
// could not be checked for want of a key or a head is reported as a warning per chain
// (no_key, no_head; see Report.Unchecked). The chain proves integrity from the first
// stored event on: whether older events were reclaimed or deleted, only a store that
// keeps everything (and a starts_late warning) can say.
func Verify(ctx context.Context, r store.Reader, trust Trust) (*Report, error) {
	rep := &Report{}
	chains := map[chainKey]*chain{}
	get := func(k chainKey) *chain {
		c := chains[k]
		if c == nil {
			c = &chain{key: k, sum: ChainSummary{AgentID: k.agent, ChainID: k.chain}, atHead: map[uint64]string{}}
			chains[k] = c
		}
		return c
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range trust.Keys {
		keys[KeyID(k)] = k
	}
	seen := map[string]bool{}
	for _, h := range trust.Heads {
		if h == nil || seen[h.Signature] {
			continue // the same head from a file and from the store
		}
		seen[h.Signature] = true
		c := get(chainKey{h.AgentID, h.ChainID})
		c.heads = append(c.heads, h)
	}
	err := r.Read(ctx, store.Query{}, func(e *event.Event) error {
		get(chainKey{e.AgentID, e.ChainID}).check(rep, e, keys)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: reading the trail: %w", err)
	}
	if len(keys) == 0 {
		rep.add(chainKey{}, 0, KindNoKey, "no public key given (--pubkey, or agent.pub in --state-dir): no anchor or head signature was checked")
	}
	order := slices.SortedFunc(maps.Keys(chains), func(a, b chainKey) int {
		return cmp.Or(cmp.Compare(a.agent, b.agent), cmp.Compare(a.chain, b.chain))
	})
	for _, k := range order {
		c := chains[k]
		c.finish(rep, keys)
		rep.Chains = append(rep.Chains, c.sum)
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.AgentID, b.AgentID), cmp.Compare(a.ChainID, b.ChainID), cmp.Compare(a.Seq, b.Seq))
	})
	return rep, nil
}

func (c *chain) check(rep *Report, e *event.Event, keys map[string]ed25519.PublicKey) {
	agent := c.key
	c.sum.Events++
	if canon, err := e.Canonical(); err != nil {
		rep.add(agent, e.Seq, KindAltered, "cannot be encoded: %v", err)
	} else if sum := sha256.Sum256(canon); hex.EncodeToString(sum[:]) != e.Hash {
		rep.add(agent, e.Seq, KindAltered, "hash %s does not match the content (%s)", e.Hash, hex.EncodeToString(sum[:]))
	}

	switch {
	case c.sum.Events == 1:
		c.sum.FirstSeq = e.Seq
		if e.Seq > 1 {
			rep.add(agent, e.Seq, KindStartsLate, "the first stored event is seq %d: seqs 1..%d were reclaimed or deleted", e.Seq, e.Seq-1)
		}
	case e.Seq == c.sum.LastSeq:
		same := "different content"
		if e.Hash == c.lastHash {
			same = "same hash"
		}
		rep.add(agent, e.Seq, KindDuplicate, "seq %d stored twice (%s)", e.Seq, same)
	case e.Seq < c.sum.LastSeq:
		if c.takeMissing(e.Seq) || e.Seq < c.sum.FirstSeq {
			rep.add(agent, e.Seq, KindReordered, "seq %d comes after seq %d", e.Seq, c.sum.LastSeq)
		} else {
			rep.add(agent, e.Seq, KindDuplicate, "seq %d stored again after seq %d", e.Seq, c.sum.LastSeq)
		}
	case e.Seq > c.sum.LastSeq+1:
		c.missing = append(c.missing, seqRange{c.sum.LastSeq + 1, e.Seq - 1})
	case e.PrevHash != c.lastHash:
		rep.add(agent, e.Seq, KindBrokenLink, "prev_hash %s is not the hash of seq %d (%s)", e.PrevHash, c.sum.LastSeq, c.lastHash)
	}
	if e.Seq > c.sum.LastSeq {
		c.sum.LastSeq, c.lastHash = e.Seq, e.Hash
	}
	for _, h := range c.heads {
		if e.Seq == h.Seq {
			c.atHead[e.Seq] = e.Hash
		}
	}

	switch e.Type {
	case event.TypeChain:
		if c.sum.KeyID == "" {
			c.sum.KeyID = e.KeyID
		}
	case event.TypeAnchor:
		c.sum.Anchors++
		if c.sum.KeyID == "" {
			c.sum.KeyID = e.KeyID
		}
		if len(keys) == 0 {
			return
		}
		pub := keys[e.KeyID]
		if pub == nil {
			rep.add(agent, e.Seq, KindUnknownKey, "anchor signed by key %q, which is not a trusted key (%s)", e.KeyID, keyList(keys))
			return
		}
		sig, err := hex.DecodeString(e.Signature)
		if err != nil || !ed25519.Verify(pub, anchorMessage(e.AgentID, e.Seq, e.PrevHash), sig) {
			rep.add(agent, e.Seq, KindBadSignature, "anchor signature does not verify")
			return
		}
		c.sum.SignedTo = max(c.sum.SignedTo, e.Seq)
	case event.TypeGap:
		c.sum.Gaps++
		c.sum.Lost += e.Lost
		if r, ok := gapRange(e); ok {
			c.declared = append(c.declared, r)
		}
		if e.Lost == 0 {
			c.sum.UnsizedGaps++
			rep.add(agent, e.Seq, KindGap, "the agent recorded a loss of unknown size: %s", e.Detail)
		} else {
			rep.add(agent, e.Seq, KindGap, "the agent recorded %d lost events: %s", e.Lost, e.Detail)
		}
	}
}

// takeMissing removes seq from the pending missing ranges, reporting whether it was there.
func (c *chain) takeMissing(seq uint64) bool {
	for i, r := range c.missing {
		if seq < r.from || seq > r.to {
			continue
		}
		var rest []seqRange
		if r.from < seq {
			rest = append(rest, seqRange{r.from, seq - 1})
		}
		if seq < r.to {
			rest = append(rest, seqRange{seq + 1, r.to})
		}
		c.missing = slices.Replace(c.missing, i, i+1, rest...)
		return true
	}
	return false
}

func (c *chain) finish(rep *Report, keys map[string]ed25519.PublicKey) {
	agent := c.key
	for _, m := range c.missing {
		for _, r := range subtract(m, c.declared) {
			if r.from == r.to {
				rep.add(agent, r.from, KindMissing, "seq %d is not in the store", r.from)
			} else {
				rep.add(agent, r.from, KindMissing, "seqs %d..%d are not in the store", r.from, r.to)
			}
		}
	}

	for _, h := range c.heads {
		if len(keys) == 0 {
			break
		}
		pub := keys[h.KeyID]
		if pub == nil {
			rep.add(agent, h.Seq, KindBadHead, "head (%s) signed by key %q, which is not a trusted key (%s)", headTime(h), h.KeyID, keyList(keys))
			continue
		}
		if err := h.Verify(pub); err != nil {
			rep.add(agent, h.Seq, KindBadHead, "head (%s): %v", headTime(h), err)
			continue
		}
		hash, seen := c.atHead[h.Seq]
		switch {
		case c.sum.Events == 0 || c.sum.LastSeq < h.Seq:
			rep.add(agent, c.sum.LastSeq+1, KindTruncated, "the signed head (%s) says the agent stored up to seq %d, the store ends at seq %d",
				headTime(h), h.Seq, c.sum.LastSeq)
		case !seen:
			// The event at h.Seq is missing: reported above as missing.
		case hash != h.Hash:
			rep.add(agent, h.Seq, KindHeadMismatch, "the signed head says seq %d has hash %s, the store holds %s", h.Seq, h.Hash, hash)
		default:
			c.sum.SignedTo = max(c.sum.SignedTo, h.Seq)
			c.sum.TailChecked = true
		}
	}
	switch {
	case c.sum.TailChecked:
	case len(keys) == 0 && len(c.heads) > 0:
		rep.add(agent, c.sum.LastSeq, KindNoHead, "no trusted key to check the signed head of chain %s with: tail not checked", c.sum.Name())
	case len(c.heads) == 0:
		rep.add(agent, c.sum.LastSeq, KindNoHead, "no signed head for chain %s: tail not checked (a cut at its end would not show)", c.sum.Name())
	}

	if c.sum.Events > 0 && c.sum.LastSeq > c.sum.SignedTo && len(keys) > 0 {
		from := max(c.sum.SignedTo+1, c.sum.FirstSeq)
		rep.add(agent, from, KindUnsigned, "seqs %d..%d come after the last signature (anchor or head)", from, c.sum.LastSeq)
	}
}

func headTime(h *Head) string { return h.Time.Format("2006-01-02T15:04:05Z07:00") }

// keyList names the trusted keys for a message.
func keyList(keys map[string]ed25519.PublicKey) string {
	return "trusted: " + strings.Join(slices.Sorted(maps.Keys(keys)), ", ")
}

// subtract returns the parts of r that no range in cover contains.
func subtract(r seqRange, cover []seqRange) []seqRange {
	out := []seqRange{r}
	for _, c := range cover {
		var next []seqRange
		for _, o := range out {
			if c.to < o.from || c.from > o.to {
				next = append(next, o)
				continue
			}
			if o.from < c.from {
				next = append(next, seqRange{o.from, c.from - 1})
			}
			if c.to < o.to {
				next = append(next, seqRange{c.to + 1, o.to})
			}
		}
		out = next
	}
	return out
}
