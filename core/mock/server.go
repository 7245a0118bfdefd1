package mock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Server is the mock listening on a TCP address.
type Server struct {
	*Handler
	srv    *http.Server
	ln     net.Listener
	conns  atomic.Int64
	total  atomic.Int64    // connections accepted since Start
	ctx    context.Context // every request's base: cancelled by Close, so waits end
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve returned
	scheme string        // http, or https with Options.TLS

	mu     sync.Mutex
	active int // handlers running
	idle   *sync.Cond
}

// Start runs the mock on a free port of 127.0.0.1.
func Start(opts Options) (*Server, error) { return Listen("127.0.0.1:0", opts) }

// Listen runs the mock on addr (host:port).
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mock: listen %s: %w", addr, err)
	}
	h := New(opts)
	s := &Server{Handler: h, ln: ln, done: make(chan struct{}), scheme: "http"}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
		s.scheme = "https"
	}
	s.idle = sync.NewCond(&s.mu)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(h.log),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
				s.total.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
			}
		},
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// serve counts running handlers so Close can wait for them.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.active++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		if s.active == 0 {
			s.idle.Broadcast()
		}
		s.mu.Unlock()
	}()
	s.Handler.ServeHTTP(w, r)
}

// URL is the mock's base URL, http://127.0.0.1:PORT (https with Options.TLS; append
// /v1 or /v1beta).
func (s *Server) URL() string { return s.scheme + "://" + s.ln.Addr().String() }

// Addr is the listening address, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// OpenConns is the number of client TCP connections open right now.
func (s *Server) OpenConns() int { return int(s.conns.Load()) }

// Accepted is the number of client TCP connections accepted since Start.
func (s *Server) Accepted() int { return int(s.total.Load()) }

// Close closes the listener and every connection, ends every wait (delay, slow,
// hang) and returns once all handlers have returned.
func (s *Server) Close() error {
	s.cancel()
	err := s.srv.Close()
	<-s.done
	s.wait()
	return err
}

// Shutdown stops accepting, lets the answers in flight finish and returns; when
// ctx ends first it closes everything as Close does and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.Close()
		return err
	}
	<-s.done
	s.wait()
	s.cancel()
	return nil
}

func (s *Server) wait() {
	s.mu.Lock()
	for s.active > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
}

// Run serves the mock on addr until ctx is done (`ralf mock`), then stops within a
// few seconds, cutting answers still in flight.
func Run(ctx context.Context, addr string, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	s, err := Listen(addr, Options{Logger: log})
	if err != nil {
		return err
	}
	log.Info("mock upstream listening",
		zap.String("openai_base_url", s.URL()+"/v1"),
		zap.String("gemini_base_url", s.URL()+"/v1beta"))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("mock: shutdown: %w", err)
	}
	return nil
}
