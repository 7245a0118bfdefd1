// Package redistest runs a private redis-server for tests: on a free
// 127.0.0.1 port, no persistence, in a temporary directory, stopped when the
// test ends. Without redis-server on PATH the test is skipped, unless the CI
// environment variable is set, where a missing server is a failure.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options changes how the server runs.
type Options struct {
	// Password, when set, is required from clients (requirepass).
	Password string
}

// Server is a running (or stopped) redis-server owned by one test.
type Server struct {
	// Addr is host:port, stable across Stop and Start.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	port int
	opts Options

	mu     sync.Mutex
	proc   *os.Process // nil when stopped
	exited chan error  // cmd.Wait's result
}

// Start starts a server and returns its address and a stop function (also
// called at the end of the test).
func Start(t testing.TB) (addr string, stop func()) {
	s := StartServer(t, Options{})
	return s.Addr, s.Stop
}

// StartServer starts a server with opts. It is stopped at the end of the test.
func StartServer(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not on PATH (required in CI): %v", err)
		}
		t.Skip("redis-server not on PATH")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), opts: opts}
	t.Cleanup(s.Stop)
	// Another test may grab the free port between our probe and redis binding
	// it; try a few ports before giving up.
	var lastErr error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redistest: free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// Stop kills the server, as a crash would: clients see their connections
// drop. Safe to call when already stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Signal(syscall.SIGCONT) // a paused process still dies on SIGKILL; this just keeps Wait prompt
	_ = s.proc.Kill()
	<-s.exited
	s.proc = nil
}

// StartAgain starts a stopped server on the same address (with no data: the
// server keeps nothing on disk).
func (s *Server) StartAgain() {
	s.t.Helper()
	var err error
	// The port was just released; something else could have taken it.
	for range 20 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart on %s: %v", s.Addr, err)
}

// Pause freezes the server (SIGSTOP) without closing anything: connections
// stay open but nothing answers, as with a hung server or a network black hole.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume undoes Pause (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatalf("redistest: %v to a stopped server", sig)
	}
	if err := s.proc.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
}

// Restart is Stop then StartAgain.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.StartAgain()
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	cmd := exec.Command(s.bin, args...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited: %v: %s", err, out.String())
		default:
		}
		if ping(s.Addr, s.opts.Password) {
			s.proc, s.exited = cmd.Process, exited
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("redis-server not answering on %s: %s", s.Addr, out.String())
}

// ping reports whether a redis server answers PING (or asks for a password,
// which also means it is up).
func ping(addr, password string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	cmd := "PING\r\n"
	if password != "" {
		cmd = "AUTH " + password + "\r\n"
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (line == "+PONG\r\n" || line == "+OK\r\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
