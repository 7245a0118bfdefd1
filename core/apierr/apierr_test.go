package apierr

import (
	"net/http/httptest"
	"testing"
)

func TestShapes(t *testing.T) {
	cases := []struct{ path, want string }{
		{"/chat", `{"error":"Bearer <key> & more","status":401}`},
		{"/v1/chat/completions", `{"error":{"code":"missing_api_key","message":"Bearer <key> & more","type":"authentication_error"}}`},
	}
	for _, tc := range cases {
		w := httptest.NewRecorder()
		Write(w, httptest.NewRequest("POST", tc.path, nil), 401, "Bearer <key> & more")
		if w.Code != 401 || w.Body.String() != tc.want || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", tc.path, w.Code, w.Body.String())
		}
	}
}
