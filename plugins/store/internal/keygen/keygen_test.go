package keygen

import (
	"regexp"
	"testing"

	"github.com/ralf-gateway/ralf/core/store"
)

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	re := regexp.MustCompile(`^sk_[0-9a-f]{48}$`)
	for range 100 {
		g, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(g.Secret) || !IsID(g.ID) || IsID(g.Secret) || !store.IsKeyID(g.ID) {
			t.Fatalf("bad key shape: id %q", g.ID)
		}
		if g.Prefix != g.Secret[:8]+"…" || g.Hash != Hash(g.Secret) || len(g.Hash) != 64 {
			t.Fatalf("prefix %q / hash mismatch", g.Prefix)
		}
		if seen[g.Secret] || seen[g.ID] {
			t.Fatal("duplicate secret or id")
		}
		seen[g.Secret], seen[g.ID] = true, true
	}
}

func TestEqual(t *testing.T) {
	h := Hash("sk_a")
	if !Equal(h, Hash("sk_a")) || Equal(h, Hash("sk_b")) || Equal(h, h[:10]) || Equal("", h) {
		t.Fatal("Equal is wrong")
	}
}
