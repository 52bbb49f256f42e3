package node

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are observed whether or not anyone registered them.
type metrics struct {
	propose *prometheus.HistogramVec // by op and outcome
	read    *prometheus.HistogramVec // linearizable read barriers, by outcome
}

func newMetrics() *metrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 14) // 0.5 ms .. 4 s
	return &metrics{
		propose: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "syncstore_propose_seconds",
			Help:    "Time from proposing a command on the leader to its result, by op and outcome.",
			Buckets: buckets,
		}, []string{"op", "outcome"}),
		read: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "syncstore_read_barrier_seconds",
			Help:    "Time a linearizable read spent confirming leadership, by outcome.",
			Buckets: buckets,
		}, []string{"outcome"}),
	}
}

// outcome labels an error for metrics.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrLeaderNotReady):
		return "not_leader"
	case errors.Is(err, ErrOutcomeUnknown):
		return "unknown"
	default:
		return "error"
	}
}

func (m *metrics) observePropose(op string, start time.Time, err error) {
	m.propose.WithLabelValues(op, outcome(err)).Observe(time.Since(start).Seconds())
}

// RegisterMetrics registers the node's metrics: propose and read latencies
// and its Raft view (read at scrape time).
func (n *Node) RegisterMetrics(reg prometheus.Registerer) error {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	collectors := []prometheus.Collector{
		n.metrics.propose,
		n.metrics.read,
		gauge("syncstore_raft_term", "Current Raft term.", func() float64 { return float64(n.raft.CurrentTerm()) }),
		gauge("syncstore_raft_commit_index", "Raft commit index.", func() float64 { return float64(n.raft.CommitIndex()) }),
		gauge("syncstore_raft_applied_index", "Last log index handed to the state machine.", func() float64 { return float64(n.raft.AppliedIndex()) }),
		gauge("syncstore_raft_last_index", "Last index in the Raft log.", func() float64 { return float64(n.raft.LastIndex()) }),
		gauge("syncstore_raft_is_leader", "1 if this node leads.", func() float64 {
			if n.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("syncstore_raft_last_contact_seconds", "Time since this node last heard from the leader (0 on the leader).", func() float64 {
			if n.raft.State() == raft.Leader {
				return 0
			}
			return time.Since(n.raft.LastContact()).Seconds()
		}),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
