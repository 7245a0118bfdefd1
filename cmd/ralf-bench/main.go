// Command ralf-bench is ralf's load benchmark. It starts the mock upstream in its own
// process and ralf as a child process, pins ralf to one core and itself (every
// thread) to the others when the machine has two or more, then drives streaming
// requests at fixed concurrency or fixed rate, directly against the mock and through ralf in the same
// run, and prints throughput, time to first byte and total time percentiles, errors,
// ralf's CPU time per request and peak RSS, with gateway/direct ratios.
//
//	go run ./cmd/ralf-bench                  # the standard table
//	go run ./cmd/ralf-bench -duration 30s -concurrency 1,16,64 -rate 1000 -auth
//	go run ./cmd/ralf-bench -floor           # a bare httputil.ReverseProxy in ralf's place
//	go run ./cmd/ralf-bench -repeat 5 -concurrency 16,64 -rate 0   # medians and ranges over 5 rounds
//	go run ./cmd/ralf-bench -tls             # the mock serves HTTPS, as real providers do
//	go run ./cmd/ralf-bench -soak 10m -rate 1000
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ralf-gateway/ralf/core/mock"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	concurrency []int
	rate        int
	chunks      int
	auth        bool
	bin         string
	path        string
	soak        time.Duration
	floor       bool
	repeat      int
	tls         bool
	roots       *x509.CertPool // with tls: trusts the mock's certificate
	certFile    string         // with tls: that certificate, for ralf (SSL_CERT_FILE)
}

func main() {
	var o options
	var conc string
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "measured time per scenario")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up per scenario")
	flag.StringVar(&conc, "concurrency", "1,16,64", "fixed-concurrency scenarios (comma-separated)")
	flag.IntVar(&o.rate, "rate", 1000, "fixed-rate scenario in requests/s (0 = skip)")
	flag.IntVar(&o.chunks, "chunks", 20, "content chunks per streamed answer")
	flag.BoolVar(&o.auth, "auth", false, "run ralf with auth and rate limiting on (a client key, a limit that is never reached)")
	flag.StringVar(&o.bin, "ralf", "", "ralf binary to test (default: go build ./cmd/ralf into a temp dir)")
	flag.StringVar(&o.path, "path", "/v1/chat/completions", "endpoint: /v1/chat/completions or /chat")
	flag.DurationVar(&o.soak, "soak", 0, "instead of the table: run a soak at -rate for this long, sampling ralf's RSS and goroutines")
	flag.IntVar(&o.repeat, "repeat", 1, "rounds of direct-then-gateway per scenario; above 1, a line per scenario gives the median and range of the ratios (the machine's noise shows as the range)")
	flag.BoolVar(&o.tls, "tls", false, "the mock upstream serves HTTPS (a self-signed certificate that ralf and the load generator trust), as real providers do")
	flag.BoolVar(&o.floor, "floor", false, "instead of ralf, measure a bare net/http reverse proxy (httputil.ReverseProxy, no parsing, no failover): the floor that Go's HTTP stack sets")
	serveFloor := flag.String("serve-floor", "", "internal: run the bare proxy on this address (with -upstream)")
	upstream := flag.String("upstream", "", "internal: the bare proxy's upstream base URL")
	onCore0 := flag.Bool("exec-on-core0", false, "internal: run the command in the arguments pinned to core 0")
	flag.Parse()
	if *onCore0 {
		err := execOnCore0(flag.Args())
		fmt.Fprintln(os.Stderr, "ralf-bench:", err)
		os.Exit(1)
	}
	if *serveFloor != "" {
		if err := runFloor(*serveFloor, *upstream); err != nil {
			fmt.Fprintln(os.Stderr, "ralf-bench:", err)
			os.Exit(1)
		}
		return
	}
	for _, s := range strings.Split(conc, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "ralf-bench: -concurrency: %q is not a positive number\n", s)
			os.Exit(2)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if (o.soak <= 0 && len(o.concurrency) == 0 && o.rate <= 0) || (o.soak > 0 && o.rate <= 0) {
		fmt.Fprintln(os.Stderr, "ralf-bench: nothing to run: give -concurrency or -rate (a soak needs -rate)")
		os.Exit(2)
	}
	if o.bin != "" {
		// ralf runs in a temp directory, and is exec'd without a PATH lookup.
		var err error
		if strings.ContainsRune(o.bin, filepath.Separator) {
			o.bin, err = filepath.Abs(o.bin)
		} else {
			o.bin, err = exec.LookPath(o.bin)
		}
		if err == nil {
			o.bin, err = filepath.Abs(o.bin)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ralf-bench: -ralf:", err)
			os.Exit(2)
		}
	}
	// Ctrl-C or a TERM: stop ralf and remove the temp files before leaving.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nralf-bench: %v: cleaning up\n", s)
		runCleanups()
		code := 130
		if n, ok := s.(syscall.Signal); ok {
			code = 128 + int(n) // as a shell reports a death by that signal
		}
		os.Exit(code)
	}()
	err := run(o)
	runCleanups()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ralf-bench:", err)
		os.Exit(1)
	}
}

// cleanups are what run registers to undo (temp directories, the ralf child, the
// mock), run at the end or on a signal, each once, last registered first.
var cleanups struct {
	sync.Mutex
	fns []func()
}

func atCleanup(f func()) {
	cleanups.Lock()
	defer cleanups.Unlock()
	cleanups.fns = append(cleanups.fns, sync.OnceFunc(f))
}

func runCleanups() {
	cleanups.Lock()
	fns := slices.Clone(cleanups.fns)
	cleanups.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// execOnCore0 replaces this process by the command, pinned to core 0: the mask of
// the thread that calls exec is the new program's, and its threads inherit it.
func execOnCore0(args []string) error {
	if len(args) == 0 {
		return errors.New("-exec-on-core0: no command")
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to core 0: %w", err)
	}
	return syscall.Exec(args[0], args, os.Environ())
}

func run(o options) error {
	ncpu := runtime.NumCPU()
	// ralf gets core 0, this process (load generator + mock) the others.
	if ncpu >= 2 {
		var set unix.CPUSet
		for c := 1; c < ncpu; c++ {
			set.Set(c)
		}
		pinProcess(&set)
	}
	mopts := mock.Options{Chunks: o.chunks}
	if o.tls {
		cfg, certPEM, err := mock.SelfSigned()
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "ralf-bench-tls")
		if err != nil {
			return err
		}
		atCleanup(func() { os.RemoveAll(dir) })
		o.certFile = filepath.Join(dir, "mock.pem")
		if err := os.WriteFile(o.certFile, certPEM, 0o644); err != nil {
			return err
		}
		o.roots = x509.NewCertPool()
		o.roots.AppendCertsFromPEM(certPEM)
		mopts.TLS = cfg
	}
	mk, err := mock.Start(mopts)
	if err != nil {
		return err
	}
	atCleanup(func() { mk.Close() })

	bin := o.bin
	if bin == "" && !o.floor {
		dir, err := os.MkdirTemp("", "ralf-bench")
		if err != nil {
			return err
		}
		atCleanup(func() { os.RemoveAll(dir) })
		bin = filepath.Join(dir, "ralf")
		fmt.Fprintln(os.Stderr, "building ralf ...")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/ralf")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	g, err := startGateway(bin, mk.URL(), o, ncpu >= 2)
	if err != nil {
		return err
	}

	key := ""
	if o.auth {
		key = benchKey
	}
	direct := target{name: "direct to mock", url: mk.URL() + "/v1/chat/completions", openai: true}
	via := target{name: "through ralf", url: g.url + o.path, key: key, openai: o.path != "/chat"}

	fmt.Printf("ralf-bench: %d-chunk streams, %s per scenario (after %s of warm-up), %d CPUs, ralf pinned to core 0 with GOMAXPROCS=1: %v, auth+rate limit: %v, endpoint %s, upstream %s\n\n",
		o.chunks, o.duration, o.warmup, ncpu, ncpu >= 2, o.auth, o.path, mk.URL())
	if o.soak > 0 {
		return soak(o, via, g)
	}
	fmt.Printf("%-28s %10s %9s %9s %9s %9s %9s %9s %7s %10s %9s\n", "scenario", "req/s", "ttfb p50", "ttfb p90", "ttfb p99", "tot p50", "tot p90", "tot p99", "errors", "cpu/req", "peak RSS")
	var scenarios []scenario
	for _, c := range o.concurrency {
		scenarios = append(scenarios, scenario{concurrency: c})
	}
	if o.rate > 0 {
		scenarios = append(scenarios, scenario{rate: o.rate})
	}
	name := "ralf"
	if o.floor {
		name = "floor"
	}
	failed := 0
	for _, sc := range scenarios {
		var ratio, cpus, ttfb50, ttfb99 []float64
		for round := 0; round < max(1, o.repeat); round++ {
			d := drive(direct, sc, o, nil)
			v := drive(via, sc, o, g.cpu)
			d.print("direct  " + sc.String())
			if err := g.exited(); err != nil {
				return fmt.Errorf("%s exited during the run (%v); the end of its output:\n%s", name, err, g.logTail())
			}
			if v.ok > 0 {
				// The CPU of the measured period only (not the warm-up's), over the
				// streams it completed.
				v.cpuPerReq = v.cpu / time.Duration(v.ok)
			}
			failed += v.errors
			v.rss = g.peakRSS()
			v.print(fmt.Sprintf("%-8s%s", name, sc))
			r, t50, t90, t99 := 100*v.rps/d.rps, ms(v.ttfb.p(50)-d.ttfb.p(50)), ms(v.ttfb.p(90)-d.ttfb.p(90)), ms(v.ttfb.p(99)-d.ttfb.p(99))
			fmt.Printf("%-28s %9.1f%% %+8.2fms %+8.2fms %+8.2fms\n\n", "  "+name+" vs direct", r, t50, t90, t99)
			ratio = append(ratio, r)
			cpus = append(cpus, float64(v.cpuPerReq.Microseconds()))
			ttfb50 = append(ttfb50, t50)
			ttfb99 = append(ttfb99, t99)
		}
		if o.repeat > 1 {
			fmt.Printf("  %s, median of %d rounds (range): %s vs direct %s%%, cpu/req %sµs, ttfb p50 %sms, ttfb p99 %sms\n\n",
				sc, o.repeat, name, spread(ratio, "%.1f"), spread(cpus, "%.0f"), spread(ttfb50, "%+.2f"), spread(ttfb99, "%+.2f"))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d requests through %s failed (see \"first error\" above): the figures do not hold", failed, name)
	}
	return nil
}

// spread formats the median of xs and their range: "96.1 (89.2 to 101.3)".
func spread(xs []float64, format string) string {
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	f := func(x float64) string { return fmt.Sprintf(format, x) }
	return f(med) + " (" + f(s[0]) + " to " + f(s[len(s)-1]) + ")"
}

const benchKey = "sk_bench_0123456789abcdef0123456789abcdef"

type gateway struct {
	cmd  *exec.Cmd
	url  string
	dir  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
}

// exited returns the exit status if ralf has exited, else nil.
func (g *gateway) exited() error {
	select {
	case <-g.done:
		if g.err == nil {
			return errors.New("exit status 0")
		}
		return g.err
	default:
		return nil
	}
}

func startGateway(bin, mockURL string, o options, pin bool) (*gateway, error) {
	dir, err := os.MkdirTemp("", "ralf-bench-gw")
	if err != nil {
		return nil, err
	}
	atCleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	auth := "auth: {enabled: false}\nlimits: {rate: {enabled: false}}\n"
	if o.auth {
		auth = "auth: {enabled: true, keys: [" + benchKey + "]}\nlimits: {rate: {enabled: true, requests: 100000000, window: 60s}}\n"
	}
	cfg := fmt.Sprintf(`server: {listen: "127.0.0.1:%d"}
log: {level: info, format: json}
providers:
  - {name: mock, dialect: openai, base_url: "%s/v1", model: mock}
store: memory://
%s`, port, mockURL, auth)
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	args := []string{bin, "serve", "--config", path}
	if o.floor {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		args = []string{self, "-serve-floor", fmt.Sprintf("127.0.0.1:%d", port), "-upstream", mockURL}
	}
	name, what := args[0], "ralf"
	if o.floor {
		what = "the bare proxy"
	}
	if pin {
		// Through this program, pinned to core 0, exec'ing into ralf (same pid).
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		name, args = self, append([]string{self, "-exec-on-core0", "--"}, args...)
	}
	cmd := exec.Command(name, args[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // ralf never outlives the bench
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	if o.certFile != "" {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+o.certFile) // Go's roots on Linux: the mock's certificate
	}
	logf, err := os.Create(filepath.Join(dir, "ralf.log")) // the access log costs what it costs in production
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &gateway{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), dir: dir, done: make(chan struct{})}
	go func() { g.err = cmd.Wait(); close(g.done) }()
	atCleanup(g.stop)
	for i := 0; i < 100 && g.exited() == nil; i++ {
		if res, err := http.Get(g.url + "/health"); err == nil {
			res.Body.Close()
			return g, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.stop()
	return nil, fmt.Errorf("%s did not start (%v); its output:\n%s", what, g.exited(), g.logTail())
}

// logTail is the end of ralf's output (its log, or a crash's traceback).
func (g *gateway) logTail() string {
	b, _ := os.ReadFile(filepath.Join(g.dir, "ralf.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (g *gateway) stop() {
	_ = g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
}

// cpu is ralf's user+system CPU time so far (taskset execs ralf in place, same pid).
func (g *gateway) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", g.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func (g *gateway) status(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n * 1024
		}
	}
	return 0
}

func (g *gateway) peakRSS() int64 { return g.status("VmHWM") }

type target struct {
	name, url, key string
	openai         bool
}

type scenario struct{ concurrency, rate int }

func (s scenario) String() string {
	if s.rate > 0 {
		return fmt.Sprintf("rate %d/s", s.rate)
	}
	return fmt.Sprintf("%d concurrent", s.concurrency)
}

type durations []time.Duration

func (d durations) p(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(q / 100 * float64(len(d)-1))
	return d[i]
}

type result struct {
	ok, errors int
	rps        float64
	ttfb, tot  durations
	cpu        time.Duration // the target's CPU in the measured period (when measured)
	cpuPerReq  time.Duration
	rss        int64
	firstErr   string
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *result) print(name string) {
	cpu, rss := "-", "-"
	if r.cpuPerReq > 0 {
		cpu = fmt.Sprintf("%dµs", r.cpuPerReq.Microseconds())
	}
	if r.rss > 0 {
		rss = fmt.Sprintf("%.1fMB", float64(r.rss)/(1<<20))
	}
	fmt.Printf("%-28s %10.0f %7.2fms %7.2fms %7.2fms %7.2fms %7.2fms %7.2fms %7d %10s %9s\n", name, r.rps,
		ms(r.ttfb.p(50)), ms(r.ttfb.p(90)), ms(r.ttfb.p(99)), ms(r.tot.p(50)), ms(r.tot.p(90)), ms(r.tot.p(99)), r.errors, cpu, rss)
	if r.firstErr != "" {
		fmt.Printf("  first error: %s\n", r.firstErr)
	}
}

// newClient is the load generator's client. With roots (-tls) it trusts the mock's
// certificate and speaks HTTP/1.1, as ralf does upstream.
func newClient(roots *x509.CertPool) *http.Client {
	tr := &http.Transport{MaxIdleConns: 2048, MaxIdleConnsPerHost: 2048, IdleConnTimeout: time.Minute, DisableCompression: true}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return &http.Client{Transport: tr}
}

// drive runs one scenario against one target: warm-up, then the measured period.
// With cpu (the target's CPU time so far), it measures the CPU of that period.
func drive(t target, sc scenario, o options, cpu func() time.Duration) *result {
	client := newClient(o.roots)
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"auto","stream":true,"messages":[{"role":"user","content":"Benchmark me"}]}`)
	if !t.openai {
		body = []byte(`{"messages":[{"role":"user","content":"Benchmark me"}]}`)
	}
	one := func(ctx context.Context) (ttfb, total time.Duration, err error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if t.key != "" {
			req.Header.Set("Authorization", "Bearer "+t.key)
		}
		start := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			b, _ := io.ReadAll(io.LimitReader(res.Body, 300))
			return 0, 0, fmt.Errorf("status %d: %s", res.StatusCode, b)
		}
		buf := make([]byte, 8192)
		var tail []byte
		for {
			n, rerr := res.Body.Read(buf)
			if n > 0 {
				if ttfb == 0 {
					ttfb = time.Since(start)
				}
				tail = append(tail[:0], buf[max(0, n-16):n]...)
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return 0, 0, rerr
			}
		}
		total = time.Since(start)
		if t.openai && !bytes.Contains(tail, []byte("[DONE]")) {
			return 0, 0, errors.New("stream ended without [DONE]")
		}
		return ttfb, total, nil
	}

	var mu sync.Mutex
	r := &result{}
	var measuring atomic.Bool
	record := func(ttfb, total time.Duration, err error) {
		if !measuring.Load() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			r.errors++
			if r.firstErr == "" {
				r.firstErr = err.Error()
			}
			return
		}
		r.ok++
		r.ttfb = append(r.ttfb, ttfb)
		r.tot = append(r.tot, total)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.warmup+o.duration)
	defer cancel()
	cpuStart, cpuEnd := make(chan time.Duration, 1), make(chan time.Duration, 1)
	go func() {
		time.Sleep(o.warmup)
		var c time.Duration
		if cpu != nil {
			c = cpu()
		}
		measuring.Store(true)
		cpuStart <- c
	}()
	go func() {
		<-ctx.Done()
		var c time.Duration
		if cpu != nil {
			c = cpu()
		}
		cpuEnd <- c
	}()
	var wg sync.WaitGroup
	if sc.rate > 0 {
		// Requests are launched on schedule, not per tick: a ticker drops ticks when
		// the generator is late, which would quietly lower the rate.
		interval := min(time.Second/time.Duration(sc.rate), time.Millisecond)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		sem := make(chan struct{}, 4096)
		start, launched := time.Now(), 0
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case now := <-tick.C:
				due := int(now.Sub(start).Seconds() * float64(sc.rate))
				for ; launched < due; launched++ {
					select {
					case sem <- struct{}{}:
					default:
						record(0, 0, errors.New("generator saturated: more than 4096 requests in flight"))
						continue
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						ttfb, total, err := one(ctx)
						if ctx.Err() == nil { // requests cut by the end of the run are not errors
							record(ttfb, total, err)
						}
					}()
				}
			}
		}
	} else {
		for i := 0; i < sc.concurrency; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					ttfb, total, err := one(ctx)
					if ctx.Err() != nil {
						return
					}
					record(ttfb, total, err)
				}
			}()
		}
	}
	wg.Wait()
	end := <-cpuEnd
	r.cpu = end - <-cpuStart
	sort.Slice(r.ttfb, func(i, j int) bool { return r.ttfb[i] < r.ttfb[j] })
	sort.Slice(r.tot, func(i, j int) bool { return r.tot[i] < r.tot[j] })
	r.rps = float64(r.ok) / o.duration.Seconds()
	return r
}

// soak runs the fixed rate for o.soak and samples ralf's RSS and goroutines (from
// /debug-free sources: /proc and the Prometheus go_goroutines gauge).
func soak(o options, t target, g *gateway) error {
	fmt.Printf("soak: %d req/s for %s through ralf\n%8s %10s %10s %8s\n", o.rate, o.soak, "elapsed", "RSS", "goroutines", "errors")
	oo := o
	oo.warmup = 0
	start := time.Now()
	var streams, errs int
	for time.Since(start) < o.soak {
		oo.duration = min(30*time.Second, o.soak-time.Since(start)) // a sample every 30 s, and none past the end
		r := drive(t, scenario{rate: o.rate}, oo, nil)
		if err := g.exited(); err != nil {
			return fmt.Errorf("ralf exited during the soak (%v); the end of its output:\n%s", err, g.logTail())
		}
		streams, errs = streams+r.ok, errs+r.errors
		fmt.Printf("%8s %9.1fMB %10d %8d\n", time.Since(start).Round(time.Second), float64(g.status("VmRSS"))/(1<<20), goroutines(g.url), r.errors)
	}
	fmt.Printf("soak: %d streams completed, %d errors, peak RSS %.1fMB\n", streams, errs, float64(g.peakRSS())/(1<<20))
	if errs > 0 {
		return fmt.Errorf("%d requests failed during the soak", errs)
	}
	return nil
}

func goroutines(url string) int {
	res, err := http.Get(url + "/metrics?format=prometheus")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

// pinProcess moves every thread of this process to set. SchedSetaffinity(0) alone
// pins only the calling thread: the Go runtime's other threads (and the load
// generator's goroutines on them) would keep running on ralf's core. Threads made
// later are cloned from pinned ones and inherit the mask.
func pinProcess(set *unix.CPUSet) {
	for i := 0; i < 3; i++ { // again, for threads started while we walked the list
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				_ = unix.SchedSetaffinity(tid, set)
			}
		}
	}
}

// runFloor serves /v1/chat/completions as a bare streaming reverse proxy to
// upstream: what Go's HTTP server and client cost with no gateway work at all.
func runFloor(addr, upstream string) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
		},
		FlushInterval: -1, // flush every write, as a streaming gateway must
		Transport:     &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.Handle("/", rp)
	return http.ListenAndServe(addr, mux)
}
