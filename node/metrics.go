package node

import (
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/syncstore/syncstore/storage"
)

// metrics are observed whether or not anyone registered them.
type metrics struct {
	propose *prometheus.HistogramVec // by op and outcome
	read    *prometheus.HistogramVec // linearizable read barriers, by outcome
	// deliveries counts outbox messages delivered to all members ("ok") and
	// attempts that will be retried ("retry").
	deliveries *prometheus.CounterVec
	// copies counts record copy jobs made to every target ("ok") and
	// attempts that will be retried ("retry").
	copies *prometheus.CounterVec
	trims  prometheus.Counter // timelines trimmed by retention
	// commitBatch: requests per storage engine commit, by store.
	commitBatch *prometheus.HistogramVec
	// appendBatch: appends per log entry of batched appends.
	appendBatch prometheus.Histogram
	fenced      prometheus.Counter // replicas fenced for damaged state
	// digestChecks: replica digest checks by outcome.
	digestChecks *prometheus.CounterVec
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
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstore_outbox_deliveries_total",
			Help: "Conversation messages delivered to every member (ok) and delivery attempts to be retried (retry).",
		}, []string{"outcome"}),
		copies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstore_record_copies_total",
			Help: "Record copy jobs made in every target collection (ok) and attempts to be retried (retry).",
		}, []string{"outcome"}),
		trims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "syncstore_retention_trims_total",
			Help: "Timelines trimmed by retention (one per timeline per trim command).",
		}),
		digestChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstore_digest_checks_total",
			Help: "Replica digest checks this node led, by outcome: equal, diverged (the odd replicas were fenced), undecided (no majority).",
		}, []string{"outcome"}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "syncstore_replicas_fenced_total",
			Help: "Replicas this node fenced because their state was found damaged (each is then rebuilt).",
		}),
		commitBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "syncstore_storage_commit_batch_size",
			Help:    "Requests (log appends of any group, state batches of any group) carried by one storage engine commit, by store.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13), // 1 .. 4096
		}, []string{"store"}),
		appendBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "syncstore_append_batch_size",
			Help:    "Appends carried by one Raft log entry: those that reached a group's leader while its previous entries were being committed travel together.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 .. 256
		}),
	}
}

// observeCommit runs on the storage engine's committer after each commit.
func (m *metrics) observeCommit(ci storage.CommitInfo) {
	m.commitBatch.WithLabelValues(ci.Store).Observe(float64(ci.Requests))
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

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
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
		n.metrics.deliveries,
		n.metrics.copies,
		n.metrics.trims,
		n.metrics.commitBatch,
		n.metrics.appendBatch,
		n.metrics.fenced,
		n.metrics.digestChecks,
		gauge("syncstore_groups_fenced", "Replicas on this node fenced for damaged state, not yet rebuilt.", func() float64 {
			fenced := 0
			for _, g := range n.groupsSnapshot() {
				if g.Fenced() != "" {
					fenced++
				}
			}
			return float64(fenced)
		}),
		gauge("syncstore_storage_free_bytes", "Free space on the data dir's disk.", func() float64 { return float64(n.storage.Space().FreeBytes) }),
		gauge("syncstore_storage_low_space", "1 while the free space is below the reserve and writes are refused.", func() float64 { return boolGauge(n.storage.Space().Low) }),
		gauge("syncstore_storage_commit_stalled", "1 while a state commit waits for space.", func() float64 { return boolGauge(n.storage.Space().Stalled != "") }),
		gauge("syncstore_meta_term", "Current Raft term of the meta group.", func() float64 { return float64(n.meta.raft.CurrentTerm()) }),
		gauge("syncstore_meta_commit_index", "Commit index of the meta group.", func() float64 { return float64(n.meta.raft.CommitIndex()) }),
		gauge("syncstore_meta_is_leader", "1 if this node leads the meta group.", func() float64 { return boolGauge(n.meta.IsLeader()) }),
		gauge("syncstore_shard_map_version", "Version of the shard map this node applied.", func() float64 {
			if m := n.shardMap(); m != nil {
				return float64(m.Version)
			}
			return 0
		}),
		gauge("syncstore_groups_hosted", "Data groups with a replica on this node.", func() float64 { return float64(len(n.groupsSnapshot())) }),
		gauge("syncstore_groups_led", "Data groups this node leads.", func() float64 {
			led := 0
			for _, g := range n.groupsSnapshot() {
				if g.raft.State() == raft.Leader {
					led++
				}
			}
			return float64(led)
		}),
	}
	// One fsync counter per store: the engine's (the data groups' Raft logs,
	// their stable stores, every group's state) and the meta group's own
	// raft-boltdb file.
	fsyncs := func(store string) float64 {
		if store == "meta" {
			return float64(n.metaFsyncs.Load())
		}
		return float64(n.storage.Fsyncs()[store])
	}
	for _, store := range append(slices.Sorted(maps.Keys(n.storage.Fsyncs())), "meta") {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "syncstore_storage_fsyncs_total",
			Help: "fsyncs (fdatasync of a file, fsync of its directory) by store: the data groups' Raft logs (log), " +
				"their stable stores (stable), the state of every group (state), the meta group's raft-boltdb file (meta).",
			ConstLabels: prometheus.Labels{"store": store},
		}, func() float64 { return fsyncs(store) }))
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
