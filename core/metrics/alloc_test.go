//go:build !race

package metrics

import (
	"testing"
	"time"
)

// TestRecordingDoesNotAllocate guards the hot path: the gateway records every request.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New()
	m.SetProviders([]ProviderState{{"groq", true}})
	r := Record{Provider: "groq", Outcome: OutcomeOK, Duration: time.Second, TTFB: time.Millisecond,
		Overhead: 100 * time.Microsecond, TokensIn: 3, TokensOut: 4, Client: "alice"}
	rejected := Record{Outcome: OutcomeRejected, Status: 400, Overhead: 50 * time.Microsecond}
	m.Request(r) // creates the client's series
	tests := []struct {
		name string
		f    func()
	}{
		{"request", func() { m.Request(r) }},
		{"rejected", func() { m.Request(rejected) }},
		{"attempt", func() { m.Attempt("groq", OutcomeOK) }},
		{"failover", func() { m.Failover("groq") }},
		{"stream", func() { m.StreamStart(); m.StreamEnd() }},
		{"rate limited", func() { m.RateLimited() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(200, tt.f); n != 0 {
				t.Errorf("%v allocations per call, want 0", n)
			}
		})
	}
}
