package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/auth"
	"github.com/syncstore/syncstore/rpc/server"
)

// startDebug serves /metrics, /livez, /readyz and /debug/pprof on addr.
// Keep addr private: pprof shows internals.
func startDebug(addr string, nd *node.Node, grpcSrv *server.Server, authz *auth.Authorizer, log *slog.Logger) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := nd.RegisterMetrics(reg); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if err := grpcSrv.RegisterMetrics(reg); err != nil {
		return nil, fmt.Errorf("register server metrics: %w", err)
	}
	if err := reg.Register(authz.Collector()); err != nil {
		return nil, fmt.Errorf("register auth metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", livez)
	mux.HandleFunc("/readyz", readyz(grpcSrv))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug server stopped", "err", err)
		}
	}()
	log.Info("debug endpoints listening", "addr", lis.Addr().String())
	return srv, nil
}

// livez answers 200 while the process serves HTTP at all: a liveness probe
// restarts a process that stopped answering, never one that is merely not
// ready (restarting a node without quorum only makes it worse).
func livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz answers 200 when the node should get traffic and 503 with the
// reason when not, as the gRPC health service reports (Kubernetes'
// convention: ?verbose is accepted and changes nothing).
func readyz(srv *server.Server) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready, reason := srv.Ready(); !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", reason)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
