package audit

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"

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
	// KindUnknownKey: an anchor signed by a key other than the one given.
	KindUnknownKey Kind = "unknown_key"
	// KindTruncated: the store ends before the seq the signed head says the agent stored.
	KindTruncated Kind = "truncated"
	// KindHeadMismatch: the event at the head's seq is not the one the head signed.
	KindHeadMismatch Kind = "head_mismatch"
	// KindBadHead: the head file's signature does not verify; the tail is unchecked.
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
	// KindNoHead / KindNoKey: no head or no public key was given, so tail truncation /
	// anchor signatures were not checked.
	KindNoHead Kind = "no_head"
	KindNoKey  Kind = "no_key"
)

var warnings = map[Kind]bool{KindGap: true, KindUnsigned: true, KindStartsLate: true, KindNoHead: true, KindNoKey: true}

// Problem is one finding, at the seq where it shows.
type Problem struct {
	AgentID string `json:"agent_id"`
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
	return fmt.Sprintf("%s agent %s seq %d %s: %s", level, p.AgentID, p.Seq, p.Kind, p.Detail)
}

// AgentSummary describes one agent's chain as Verify read it.
type AgentSummary struct {
	AgentID  string `json:"agent_id"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Events   uint64 `json:"events"`
	Anchors  uint64 `json:"anchors"`
	Gaps     uint64 `json:"gaps"`
	Lost     uint64 `json:"lost"`      // the sum of the gap events' Lost
	SignedTo uint64 `json:"signed_to"` // last seq covered by a valid anchor or the head
}

// maxProblems bounds a report on a badly damaged store; the rest are only counted.
const maxProblems = 10000

// Report is Verify's result.
type Report struct {
	Agents   []AgentSummary `json:"agents"`
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

func (r *Report) add(agent string, seq uint64, kind Kind, format string, args ...any) {
	if len(r.Problems) >= maxProblems {
		r.Omitted++
		return
	}
	r.Problems = append(r.Problems, Problem{AgentID: agent, Seq: seq, Kind: kind, Warning: warnings[kind], Detail: fmt.Sprintf(format, args...)})
}

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

// chain is Verify's state for one agent.
type chain struct {
	sum      AgentSummary
	lastHash string // stored hash of the event at sum.LastSeq
	missing  []seqRange
	declared []seqRange
	headHash string // stored hash of the event at the head's seq, once seen
	headSeen bool
}

// Verify reads every event of r in order and checks each agent's chain:
//
//   - every event's hash is the SHA-256 of its canonical encoding (else altered);
//   - seqs rise by one (a seq lower than one seen is reordered if the chain skipped it,
//     else duplicate; a seq seen twice in a row is duplicate); skipped seqs are missing
//     unless a gap event in the chain names them ("seq a..b"), which makes them a
//     warning;
//   - each event's prev_hash is the hash of the event before (else broken_link);
//   - each anchor's signature verifies with pub over (agent, seq, prev_hash);
//   - with head (that agent's signed head file): the store reaches head.Seq and the event
//     there has head.Hash (else truncated / head_mismatch).
//
// Events after the last anchor or head are reported as unsigned (a warning), because
// removing some of them from the end cannot be told from their never being written. pub
// or head may be nil; what they would check is then reported as a warning. The chain
// proves integrity from the first stored event on: whether older events were reclaimed
// or deleted, only a store that keeps everything (and a starts_late warning) can say.
func Verify(ctx context.Context, r store.Reader, pub ed25519.PublicKey, head *Head) (*Report, error) {
	rep := &Report{}
	chains := map[string]*chain{}
	var order []string
	keyID := ""
	if pub != nil {
		keyID = KeyID(pub)
	}
	err := r.Read(ctx, store.Query{}, func(e *event.Event) error {
		c := chains[e.AgentID]
		if c == nil {
			c = &chain{sum: AgentSummary{AgentID: e.AgentID}}
			chains[e.AgentID] = c
			order = append(order, e.AgentID)
		}
		c.check(rep, e, pub, keyID, head)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: reading the trail: %w", err)
	}
	if pub == nil {
		rep.add("", 0, KindNoKey, "no public key given: anchor signatures and the head were not checked")
	}
	if head != nil && chains[head.AgentID] == nil {
		c := &chain{sum: AgentSummary{AgentID: head.AgentID}}
		chains[head.AgentID] = c
		order = append(order, head.AgentID)
	}
	slices.Sort(order)
	for _, agent := range order {
		c := chains[agent]
		c.finish(rep, pub, head)
		rep.Agents = append(rep.Agents, c.sum)
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.AgentID, b.AgentID), cmp.Compare(a.Seq, b.Seq))
	})
	return rep, nil
}

func (c *chain) check(rep *Report, e *event.Event, pub ed25519.PublicKey, keyID string, head *Head) {
	agent := e.AgentID
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
	if head != nil && head.AgentID == agent && e.Seq == head.Seq {
		c.headSeen, c.headHash = true, e.Hash
	}

	switch e.Type {
	case event.TypeAnchor:
		c.sum.Anchors++
		if pub == nil {
			return
		}
		if e.KeyID != keyID {
			rep.add(agent, e.Seq, KindUnknownKey, "anchor signed by key %q, not %s", e.KeyID, keyID)
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

func (c *chain) finish(rep *Report, pub ed25519.PublicKey, head *Head) {
	agent := c.sum.AgentID
	for _, m := range c.missing {
		for _, r := range subtract(m, c.declared) {
			if r.from == r.to {
				rep.add(agent, r.from, KindMissing, "seq %d is not in the store", r.from)
			} else {
				rep.add(agent, r.from, KindMissing, "seqs %d..%d are not in the store", r.from, r.to)
			}
		}
	}

	var headErr error
	if head != nil && pub != nil {
		headErr = head.Verify(pub)
	}
	switch {
	case head == nil || head.AgentID != agent:
		rep.add(agent, c.sum.LastSeq, KindNoHead, "no head file for this agent: a cut at the end of its trail cannot be detected")
	case pub == nil:
	case headErr != nil:
		rep.add(agent, head.Seq, KindBadHead, "%v", headErr)
	case c.sum.LastSeq < head.Seq:
		rep.add(agent, c.sum.LastSeq+1, KindTruncated, "the signed head (%s) says the agent stored up to seq %d, the store ends at seq %d",
			head.Time.Format("2006-01-02T15:04:05Z07:00"), head.Seq, c.sum.LastSeq)
	case !c.headSeen:
		// The event at head.Seq is missing: reported above as missing.
	case c.headHash != head.Hash:
		rep.add(agent, head.Seq, KindHeadMismatch, "the signed head says seq %d has hash %s, the store holds %s", head.Seq, head.Hash, c.headHash)
	default:
		c.sum.SignedTo = max(c.sum.SignedTo, head.Seq)
	}

	if c.sum.Events > 0 && c.sum.LastSeq > c.sum.SignedTo && pub != nil {
		from := max(c.sum.SignedTo+1, c.sum.FirstSeq)
		rep.add(agent, from, KindUnsigned, "seqs %d..%d come after the last signature (anchor or head)", from, c.sum.LastSeq)
	}
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
