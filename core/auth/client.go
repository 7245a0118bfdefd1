// Package auth guards the gateway's client-facing routes: client keys (static
// ones from gateway.yaml and managed ones in the store), the master key for the
// admin API, per-client rate limits and CORS. Every middleware here is a
// func(http.Handler) http.Handler that costs nothing when its block is off.
//
// No secret (client key, managed key, master key) is ever written to a log
// line, an error, or a response other than the one that creates it.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
)

// Client kinds.
const (
	KindManaged   = "managed"   // a key created with the admin API or `ralf keys`
	KindStatic    = "static"    // a key listed in auth.keys
	KindMaster    = "master"    // the master key (admin API only)
	KindAnonymous = "anonymous" // auth is off
)

// Client is who sent a request, as established by Authenticate.
type Client struct {
	Name  string // display name for logs: the managed key's name, "static-N", never a secret
	KeyID string // managed key id, or a sha256 prefix for a static key; empty when anonymous
	Kind  string // KindManaged, KindStatic, KindMaster or KindAnonymous
	IP    string // r.RemoteAddr host (X-Forwarded-For is not trusted)
}

type clientKey struct{}

// WithClient returns ctx carrying c.
func WithClient(ctx context.Context, c Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientFrom returns the client Authenticate put in ctx.
func ClientFrom(ctx context.Context) (Client, bool) {
	c, ok := ctx.Value(clientKey{}).(Client)
	return c, ok
}

// ClientIP is the host part of r.RemoteAddr. Proxy headers are ignored on
// purpose: anyone can send X-Forwarded-For, so trusting it would let a client
// pick its own rate-limit bucket.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// maxKeyLen bounds what is hashed or sent to the store; real keys are far shorter.
const maxKeyLen = 512

// presentedKey returns the key from "Authorization: Bearer KEY" or "X-API-Key: KEY".
func presentedKey(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			if k := strings.TrimSpace(h[7:]); k != "" {
				return k
			}
		}
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key"))
}

// digest is the sha256 of a key: comparisons run over fixed-size digests so
// their time depends on neither the key's length nor its content.
func digest(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// staticSet holds the digests of the static client keys.
type staticSet struct {
	digests [][32]byte
	ids     []string // sha256 prefix per key (rate-limit bucket), never the key
}

func newStaticSet(keys []string) *staticSet {
	s := &staticSet{}
	for _, k := range keys {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		d := digest(k)
		s.digests = append(s.digests, d)
		s.ids = append(s.ids, hex.EncodeToString(d[:8]))
	}
	return s
}

// match compares d with every static key without an early exit and returns the
// 0-based index of the match, or -1.
func (s *staticSet) match(d [32]byte) int {
	idx := -1
	for i := range s.digests {
		eq := subtle.ConstantTimeCompare(d[:], s.digests[i][:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
	}
	return idx
}

// equalDigest compares two secrets in constant time.
func equalDigest(a, b [32]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }
