package server

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// serverMetrics are observed whether or not anyone registered them.
type serverMetrics struct {
	queued atomic.Int64       // bytes of Subscribe events waiting to be sent
	gaps   prometheus.Counter // Gap markers sent to slow subscribers
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "syncstore_subscribe_gaps_total",
			Help: "Timelines dropped from a Subscribe stream with a Gap marker (subscriber behind).",
		}),
	}
}

// RegisterMetrics registers the server's metrics.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "syncstore_subscribe_queued_bytes",
		Help: "Approximate bytes of Subscribe events queued for sending, all streams together.",
	}, func() float64 { return float64(s.metrics.queued.Load()) })
	for _, c := range []prometheus.Collector{queued, s.metrics.gaps} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// QueuedBytes is roughly what the server's Subscribe streams hold for
// sending now.
func (s *Server) QueuedBytes() int64 { return s.metrics.queued.Load() }
