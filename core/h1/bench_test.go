package h1

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStream compares this transport with net/http's on the same loopback
// server: one POST and a 20-event SSE answer per iteration, sequential and with 16
// parallel clients, over plain TCP and over TLS (where net/http's transport speaks
// HTTP/2, one connection for all, and this one HTTP/1.1). Compare them in the same run:
//
//	go test -run '^$' -bench Stream -benchmem ./core/h1/
func BenchmarkStream(b *testing.B) {
	event := "data: " + strings.Repeat("x", 180) + "\n\n"
	handler := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 20; i++ {
			io.WriteString(w, event)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello"}]}`
	for _, tlsOn := range []bool{false, true} {
		s := newServer(b, handler, tlsOn)
		prefix := "http/"
		std := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
		if tlsOn {
			prefix = "https/"
			std = s.Client().Transport.(*http.Transport).Clone() // HTTP/2, as the server offers it
			std.MaxIdleConnsPerHost, std.DisableCompression = 256, true
		}
		transports := []struct {
			name string
			rt   http.RoundTripper
		}{
			{"h1", newTransport(b, s)},
			{"net-http", std},
		}
		for _, tr := range transports {
			c := &http.Client{Transport: tr.rt}
			one := func(buf []byte) error {
				res, err := c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					return err
				}
				defer res.Body.Close()
				for {
					_, err := res.Body.Read(buf)
					if err == io.EOF {
						return nil
					}
					if err != nil {
						return err
					}
				}
			}
			b.Run(prefix+tr.name+"/sequential", func(b *testing.B) {
				buf := make([]byte, 16<<10)
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					if err := one(buf); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(prefix+tr.name+"/parallel-16", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(8) // 16 goroutines on 2 CPUs
				defer reportCPU(b)()
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 16<<10)
					for pb.Next() {
						if err := one(buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			tr.rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		}
	}
}

// reportCPU adds the process's CPU time per iteration (client and server together,
// user and system) to the benchmark's results: what a request costs, where ns/op
// is only how long it takes.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
