package middleware

import (
	"strings"
	"testing"
)

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"seed shape", `{"error":"Invalid API key","status":403}`, "Invalid API key"},
		{"openai shape", `{"error":{"message":"Not found: GET /v1/x","type":"not_found_error","code":"not_found"}}`, "Not found: GET /v1/x"},
		{"rate limit", `{"error":"Rate limit exceeded","resetAt":"2026-01-01T00:00:00.000Z","status":429}`, "Rate limit exceeded"},
		{"health body", `{"status":"down","providers":[]}`, ""},
		{"text", `Not Found`, ""},
		{"truncated", `{"error":"abc`, ""},
		{"empty", ``, ""},
		{"error not a message", `{"error":42}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorMessage([]byte(tt.body)); got != tt.want {
				t.Fatalf("errorMessage(%s) = %q, want %q", tt.body, got, tt.want)
			}
		})
	}
}

func TestLogPath(t *testing.T) {
	for in, want := range map[string]string{
		"/chat":                         "/chat",
		"/admin/keys":                   "/admin/keys",
		"/admin/keys/":                  "/admin/keys/",
		"/admin/keys/key_0123456789ab":  "/admin/keys/key_0123456789ab",
		"/admin/keys/key_0123456789ab/": "/admin/keys/key_0123456789ab/",
		"/admin/keys/sk_" + strings.Repeat("a", 48):    "/admin/keys/[redacted]",
		"/admin/keys/key_0123456789abX":                "/admin/keys/[redacted]",
		"/admin/keys/my-master-key":                    "/admin/keys/[redacted]",
		"/admin/keyssk_abc":                            "/admin/keys[redacted]",
		"//admin/keys/sk_abc":                          "//admin/keys/[redacted]",
		"/admin/Keys/x":                                "/admin/Keys/[redacted]",
		"/v1/sk_0123456789abcdef0123/x":                "/v1/sk_[redacted]/x",
		"/v1/sk_0123/x":                                "/v1/sk_0123/x",
		"/v1/task_0123456789abcdef01234":               "/v1/task_0123456789abcdef01234",
		"/v1/x/admin/keys/foo":                         "/v1/x/admin/keys/foo",
		"/\xff\xff\xff\xff/admin/keys/secret":          "/\xff\xff\xff\xff/admin/keys/secret",
		"/\xff\xff\xff\xff\xff\xff\xff\xff/admin/keys": "/\xff\xff\xff\xff\xff\xff\xff\xff/admin/keys",
		"/\xc4\xb0/admin/keys/sk_0123456789abcdef0123": "/\xc4\xb0/admin/keys/sk_[redacted]",
		"":                    "",
		"/admin/keys//sk_abc": "/admin/keys/[redacted]",
	} {
		if got := RedactPath(in); got != want {
			t.Errorf("RedactPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRedactPath: any path (URL.Path holds any bytes, through %FF) is handled without
// a panic, and no managed key survives it.
func FuzzRedactPath(f *testing.F) {
	for _, s := range []string{"/admin/keys/sk_0123456789abcdef0123", "/\xff\xff/admin/keys", "/ADMIN/KEYS/x", "//admin/keys", "sk_"} {
		f.Add(s)
	}
	key := "sk_" + strings.Repeat("0a", 24)
	f.Fuzz(func(t *testing.T, p string) {
		if got := RedactPath(p + "/" + key); strings.Contains(got, key) {
			t.Fatalf("RedactPath(%q) = %q keeps the key", p+"/"+key, got)
		}
	})
}
