package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want string
	}{
		{[]float64{101.3, 89.2, 96.1}, "96.1 (89.2 to 101.3)"},
		{[]float64{4, 1, 3, 2}, "2.5 (1.0 to 4.0)"},
		{[]float64{7}, "7.0 (7.0 to 7.0)"},
	} {
		in := append([]float64(nil), tc.xs...)
		if got := spread(tc.xs, "%.1f"); got != tc.want {
			t.Errorf("spread(%v) = %q, want %q", tc.xs, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.xs[i] {
				t.Fatalf("spread reordered its input: %v", tc.xs)
			}
		}
	}
}

// TestDriveMeasuresTheMeasuredPeriodOnly: the CPU drive reports is the target's CPU
// between the end of the warm-up and the end of the run, the period whose requests it
// counts. The fake "CPU" here is the number of requests the target has served, so it
// must match the requests counted, not include the warm-up's as well.
func TestDriveMeasuresTheMeasuredPeriodOnly(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Millisecond)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {}\n\ndata: [DONE]\n\n")
		served.Add(1)
	}))
	defer srv.Close()
	o := options{warmup: 300 * time.Millisecond, duration: 300 * time.Millisecond}
	r := drive(target{url: srv.URL, openai: true}, scenario{concurrency: 1}, o, func() time.Duration {
		return time.Duration(served.Load())
	})
	if r.ok < 10 || r.errors != 0 {
		t.Fatalf("ok %d errors %d (%s)", r.ok, r.errors, r.firstErr)
	}
	if d := int64(r.cpu) - int64(r.ok); d < -2 || d > 2 {
		t.Fatalf("measured %d units of the target's work for %d requests counted: the warm-up's work is in it", r.cpu, r.ok)
	}
}
