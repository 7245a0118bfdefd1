package llm

import (
	"strings"
	"testing"
)

func TestSecretsOfAProvider(t *testing.T) {
	got := Secrets("sk-key-123", map[string]string{
		"api-key":       "0a1b2c3d4e5f6a7b",
		"Authorization": "Bearer proxy-token-xyz",
		"X-Title":       "My application name", // no secret in it
		"X-Short":       "1234567",             // too short to be one
	})
	want := []string{"Bearer proxy-token-xyz", "0a1b2c3d4e5f6a7b", "proxy-token-xyz", "sk-key-123"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Secrets = %q, want %q", got, want)
	}
	msg := SanitizeSecrets("echo: api-key 0a1b2c3d4e5f6a7b, auth Bearer proxy-token-xyz, token proxy-token-xyz, app My application name, cut 0a1b2c3d", got, 300)
	if want := "echo: api-key [redacted], auth [redacted], token [redacted], app My application name, cut [redacted]"; msg != want {
		t.Fatalf("SanitizeSecrets = %q, want %q", msg, want)
	}
}
