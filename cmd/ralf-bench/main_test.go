package main

import "testing"

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
