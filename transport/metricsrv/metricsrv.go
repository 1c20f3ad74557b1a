// Package metricsrv serves a Prometheus registry over plain HTTP: GET /metrics in the
// text exposition format, on a listener of its own (cofferd's metrics_listen, the agent
// daemon's --metrics-listen). It carries no secrets and no state of Coffer's: the
// registry it is handed decides what is exposed. Plain HTTP because scrapers expect it;
// bind it to a loopback or management address.
package metricsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where the metrics are served.
const Path = "/metrics"

// scrapeTimeout bounds one scrape: collectors that read node state stop waiting then.
const scrapeTimeout = 10 * time.Second

// Server is a running metrics listener. Close stops it.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	err  error // set before done is closed
}

// Start listens on addr ("host:port"; port 0 picks a free one) and serves g at Path in
// the background. It fails at once when addr cannot be bound. log receives serving
// errors (nil: discarded).
func Start(addr string, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if addr == "" {
		return nil, errors.New("metricsrv: empty listen address")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metricsrv: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slogErrors{log},
		ErrorHandling: promhttp.ContinueOnError, // a failing collector does not hide the rest
		Timeout:       scrapeTimeout,
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "coffer metrics: GET", Path)
	})
	s := &Server{ln: ln, done: make(chan struct{}), srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      scrapeTimeout + 5*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
			log.Error("metrics listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address (with the port chosen when addr asked for port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the metrics URL of the bound address.
func (s *Server) URL() string { return "http://" + s.Addr() + Path }

// Close stops the listener, waits up to ctx for scrapes in progress and for the serving
// goroutine to end, and returns a serving error that stopped it earlier.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("metricsrv: close %s: %w", s.Addr(), err)
	}
	if s.err != nil {
		return fmt.Errorf("metricsrv: %s: %w", s.Addr(), s.err)
	}
	return nil
}

// slogErrors adapts a slog.Logger to promhttp's error logger.
type slogErrors struct{ l *slog.Logger }

func (e slogErrors) Println(v ...any) { e.l.Warn("metrics scrape", "err", fmt.Sprint(v...)) }
