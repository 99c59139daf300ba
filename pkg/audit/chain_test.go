package audit

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// events is a store.Reader over events in memory, in the order given.
type events []*event.Event

func (evs events) Read(_ context.Context, _ store.Query, fn func(*event.Event) error) error {
	for _, e := range evs {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// twoChains writes n statements through each of two trails with the same agent id and
// fresh state directories (a reinstall, or a second agent given the same id), and returns
// their envs and all their events together, as one store of record would hold them.
func twoChains(t *testing.T, n int) (a, b *env, all events) {
	a, b = newEnv(t, Config{}, local.Options{}), newEnv(t, Config{}, local.Options{})
	for _, e := range []*env{a, b} {
		e.start()
		for i := range n {
			e.tr.Emit(stmt(i))
		}
		e.stop()
		all = append(all, e.events()...)
	}
	return a, b, all
}

func loadTrust(t *testing.T, envs ...*env) Trust {
	t.Helper()
	var tr Trust
	for _, e := range envs {
		x, err := LoadTrust(e.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		tr.Keys = append(tr.Keys, x.Keys...)
		tr.Heads = append(tr.Heads, x.Heads...)
	}
	return tr
}

func kinds(rep *Report) map[Kind][]Problem {
	out := map[Kind][]Problem{}
	for _, p := range rep.Problems {
		out[p.Kind] = append(out[p.Kind], p)
	}
	return out
}

func TestTwoChainsUnderOneAgentID(t *testing.T) {
	a, b, all := twoChains(t, 20)
	ea, eb := a.events(), b.events()
	for _, evs := range [][]*event.Event{ea, eb} {
		first := evs[0]
		if first.Seq != 1 || first.Type != event.TypeChain || first.ChainID == "" || first.KeyID == "" {
			t.Fatalf("a chain does not open with a chain event at seq 1: %+v", first)
		}
		for _, e := range evs {
			if e.ChainID != first.ChainID {
				t.Fatalf("seq %d has chain %q, the chain is %q", e.Seq, e.ChainID, first.ChainID)
			}
		}
	}
	if ea[0].AgentID != eb[0].AgentID || ea[0].ChainID == eb[0].ChainID {
		t.Fatalf("want one agent id with two chain ids, got %s/%s and %s/%s", ea[0].AgentID, ea[0].ChainID, eb[0].AgentID, eb[0].ChainID)
	}

	rep, err := Verify(t.Context(), all, loadTrust(t, a, b))
	if err != nil {
		t.Fatal(err)
	}
	requireOK(t, rep)
	if len(rep.Problems) != 0 || len(rep.Chains) != 2 {
		t.Fatalf("want two clean chains, got %+v %v", rep.Chains, rep.Problems)
	}
	for _, c := range rep.Chains {
		want := len(ea)
		if c.ChainID == eb[0].ChainID {
			want = len(eb)
		}
		if !c.TailChecked || c.Events != uint64(want) || c.FirstSeq != 1 || c.KeyID == "" {
			t.Fatalf("chain %+v", c)
		}
	}

	// Only a's key and head: b's chain is reported for what it is, not as a's.
	rep, err = Verify(t.Context(), all, loadTrust(t, a))
	if err != nil {
		t.Fatal(err)
	}
	k := kinds(rep)
	if rep.OK() || len(k[KindUnknownKey]) == 0 || k[KindUnknownKey][0].ChainID != eb[0].ChainID {
		t.Fatalf("b's chain with only a's key: want unknown_key in b's chain, got %v", rep.Problems)
	}
	if len(k[KindNoHead]) != 1 || k[KindNoHead][0].ChainID != eb[0].ChainID {
		t.Fatalf("want no_head for b's chain only, got %v", k[KindNoHead])
	}
	for kind, ps := range k {
		for _, p := range ps {
			if p.ChainID == ea[0].ChainID {
				t.Errorf("a's chain: %s %v", kind, p)
			}
		}
	}
}

func TestVerifySaysWhatItCouldNotCheck(t *testing.T) {
	a, b, all := twoChains(t, 5)
	rep, err := Verify(t.Context(), all, Trust{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("unchecked is not broken: %v", rep.Problems)
	}
	un := rep.Unchecked()
	var noHead []string
	for _, p := range un {
		if p.Kind == KindNoHead {
			noHead = append(noHead, p.String())
		}
	}
	if len(noHead) != 2 || len(kinds(rep)[KindNoKey]) != 1 {
		t.Fatalf("want no_key and a no_head per chain, got %v", un)
	}
	for _, s := range noHead {
		if !strings.Contains(s, "tail not checked") {
			t.Errorf("no_head says %q", s)
		}
	}

	// Keys but no heads: the signatures are checked, the tails are not.
	tr := loadTrust(t, a, b)
	tr.Heads = nil
	if rep, err = Verify(t.Context(), all, tr); err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Unchecked()) != 2 {
		t.Fatalf("want OK with two no_head, got %v", rep.Problems)
	}
	for _, c := range rep.Chains {
		if c.TailChecked || c.SignedTo == 0 {
			t.Fatalf("chain %+v", c)
		}
	}

	// A cut tail shows only with the head.
	cut := all[:len(all)-3]
	if rep, err = Verify(t.Context(), cut, tr); err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("without heads a cut tail cannot show, got %v", rep.Problems)
	}
	if rep, err = Verify(t.Context(), cut, loadTrust(t, a, b)); err != nil {
		t.Fatal(err)
	}
	if k := kinds(rep); rep.OK() || len(k[KindTruncated]) != 1 {
		t.Fatalf("want truncated, got %v", rep.Problems)
	}

	// A head signed by a key that is not trusted checks nothing, and says so.
	tr = loadTrust(t, a, b)
	tr.Keys = tr.Keys[:1]
	if rep, err = Verify(t.Context(), all, tr); err != nil {
		t.Fatal(err)
	}
	if k := kinds(rep); len(k[KindBadHead]) != 1 || !strings.Contains(k[KindBadHead][0].Detail, "not a trusted key") {
		t.Fatalf("want bad_head for the untrusted head, got %v", rep.Problems)
	}
}

// A head relabelled as another chain's does not verify: the chain id is signed.
func TestHeadSignsChainID(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &Head{AgentID: "a", ChainID: "c1", Seq: 3, Hash: "x"}
	h.sign(key)
	if err := h.Verify(pub); err != nil {
		t.Fatal(err)
	}
	h.ChainID = "c2"
	if err := h.Verify(pub); err == nil {
		t.Fatal("a head relabelled to another chain verifies")
	}
}

// A state directory from before chain ids (a key, no chain.id) goes on with the empty id,
// so that its chain stays one chain; a new one gets an id, kept across restarts.
func TestChainIDFile(t *testing.T) {
	legacy := t.TempDir()
	if _, err := LoadOrCreateKey(legacy); err != nil {
		t.Fatal(err)
	}
	if id, err := LoadOrCreateChainID(legacy); err != nil || id != "" {
		t.Fatalf("legacy state dir: chain id %q, %v", id, err)
	}
	if _, err := os.Stat(filepath.Join(legacy, ChainFile)); !os.IsNotExist(err) {
		t.Fatalf("chain.id written into a legacy state dir: %v", err)
	}

	e := newEnv(t, Config{}, local.Options{})
	e.start()
	e.tr.Emit(stmt(1))
	e.stop()
	id, err := LoadOrCreateChainID(e.stateDir)
	if err != nil || len(id) != 32 {
		t.Fatalf("chain id %q, %v", id, err)
	}
	e.open(Config{})
	e.start()
	e.tr.Emit(stmt(2))
	e.stop()
	evs := e.events()
	if countType(evs, event.TypeChain) != 1 {
		t.Fatalf("a restart announced the chain again")
	}
	for _, ev := range evs {
		if ev.ChainID != id {
			t.Fatalf("seq %d in chain %q, want %q", ev.Seq, ev.ChainID, id)
		}
	}

	if err := os.WriteFile(filepath.Join(e.stateDir, ChainFile), []byte("nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateChainID(e.stateDir); err == nil || !strings.Contains(err.Error(), "not a chain id") {
		t.Fatalf("a bad chain.id: %v", err)
	}
}
