// Package keygen makes managed client keys the same way for every store
// backend: the secret, its id, its display prefix and the hash that is stored
// in place of the secret.
package keygen

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/ralf-gateway/ralf/core/store"
)

const (
	// SecretPrefix starts every managed key, so leaked keys are easy to recognise.
	SecretPrefix = "sk_"
	// IDPrefix starts every key id, so an id is never mistaken for a secret.
	IDPrefix = store.KeyIDPrefix
	// secretBytes of randomness give 48 hex characters (192 bits).
	secretBytes = 24
	// idBytes give 12 hex characters: ids only need to be unique, not secret.
	idBytes = 6
	// displayChars is how much of the secret ListKeys shows.
	displayChars = 8
)

// New is one fresh key: its secret (returned to the user once), id, display
// prefix and the hex SHA-256 of the secret (what the store keeps).
type New struct {
	Secret string
	ID     string
	Prefix string
	Hash   string
}

// Generate makes a key from crypto/rand.
func Generate() (New, error) {
	var b [secretBytes + idBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return New{}, fmt.Errorf("generate key: %w", err)
	}
	secret := SecretPrefix + hex.EncodeToString(b[:secretBytes])
	return New{
		Secret: secret,
		ID:     IDPrefix + hex.EncodeToString(b[secretBytes:]),
		Prefix: Display(secret),
		Hash:   Hash(secret),
	}, nil
}

// Hash is the hex SHA-256 of a secret. A fast hash is enough: the secrets are
// 192 random bits, not passwords, so there is nothing to brute-force.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Display is the part of a secret that may be shown: its first characters and "…".
func Display(secret string) string {
	if len(secret) > displayChars {
		secret = secret[:displayChars]
	}
	return secret + "…"
}

// Equal compares two hashes in constant time. Backends find a key through an
// index on its hash, then confirm with Equal so that no comparison involving
// secret-derived bytes leaks timing.
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// IsID reports whether s has the shape of a key id (as opposed to a secret).
func IsID(s string) bool {
	return strings.HasPrefix(s, IDPrefix)
}
