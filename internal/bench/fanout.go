package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
)

// FanOutConfig is a fan-out run: Messages sent one after the other to a
// conversation of Members, each timed until every member timeline has it.
type FanOutConfig struct {
	Members      int
	Messages     int
	PayloadBytes int
	OpTimeout    time.Duration
}

// FanOutResult: per message, the time from Send's acknowledgement until the
// last member's timeline had it (as a Subscribe to all member timelines
// saw), and the time from Send's call to that point.
type FanOutResult struct {
	Config      FanOutConfig  `json:"config"`
	Sent        int           `json:"sent"`
	Incomplete  int           `json:"incomplete"`
	AckP50      time.Duration `json:"after_ack_p50_ns"`
	AckP99      time.Duration `json:"after_ack_p99_ns"`
	AckMax      time.Duration `json:"after_ack_max_ns"`
	SendP50     time.Duration `json:"after_send_p50_ns"`
	SendP99     time.Duration `json:"after_send_p99_ns"`
	SendLatency time.Duration `json:"send_p50_ns"`
}

// FanOut runs a fan-out measurement through cl.
func FanOut(ctx context.Context, cl *client.Client, cfg FanOutConfig) (FanOutResult, error) {
	if cfg.Members < 1 || cfg.Messages < 1 || cfg.OpTimeout <= 0 {
		return FanOutResult{}, fmt.Errorf("bench: fan-out needs members, messages and a timeout; got %+v", cfg)
	}
	runID := rand.Uint64()
	conv := fmt.Sprintf("fanout-%x", runID)
	members := make([]string, cfg.Members)
	for i := range members {
		members[i] = fmt.Sprintf("fanout-%x-member-%d", runID, i)
	}
	sub, err := cl.Subscribe(ctx, client.SubscribeOptions{NotifyOnly: true, Buffer: 4 * cfg.Members})
	if err != nil {
		return FanOutResult{}, err
	}
	defer sub.Close()
	for _, m := range members {
		if err := sub.Add(m, 0); err != nil {
			return FanOutResult{}, err
		}
	}
	// Messages go one at a time: message k has reached everyone when every
	// member's head is at least k.
	var mu sync.Mutex
	heads := map[string]uint64{}
	target, atTarget := uint64(0), 0
	done := make(chan time.Time, 1)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for ev := range sub.Events() {
			now := time.Now()
			mu.Lock()
			old := heads[ev.Timeline]
			heads[ev.Timeline] = max(old, ev.Head)
			if target > 0 && old < target && ev.Head >= target {
				if atTarget++; atTarget == cfg.Members {
					done <- now // room: the sender drains done before each message
				}
			}
			mu.Unlock()
		}
	}()

	payload := make([]byte, cfg.PayloadBytes)
	res := FanOutResult{Config: cfg}
	var afterAck, afterSend, sendLat []time.Duration
	for i := 1; i <= cfg.Messages; i++ {
		mu.Lock()
		target, atTarget = uint64(i), 0
		for _, h := range heads {
			if h >= target {
				atTarget++
			}
		}
		select {
		case <-done: // a message that timed out completed late
		default:
		}
		mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		t0 := time.Now()
		_, err := cl.Send(sctx, conv, members[0], members[1:], payload, client.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-%d", conv, i)})
		acked := time.Now()
		cancel()
		if err != nil {
			return res, fmt.Errorf("send %d: %w", i, err)
		}
		res.Sent++
		sendLat = append(sendLat, acked.Sub(t0))
		wait := time.NewTimer(cfg.OpTimeout)
		select {
		case at := <-done:
			afterAck = append(afterAck, max(0, at.Sub(acked)))
			afterSend = append(afterSend, at.Sub(t0))
		case <-wait.C:
			res.Incomplete++
		case <-ctx.Done():
			wait.Stop()
			return res, ctx.Err()
		}
		wait.Stop()
	}
	sub.Close()
	<-consumed
	a, s, l := Summarize(Config{}, time.Second, afterAck), Summarize(Config{}, time.Second, afterSend), Summarize(Config{}, time.Second, sendLat)
	res.AckP50, res.AckP99, res.AckMax = a.P50, a.P99, a.Max
	res.SendP50, res.SendP99, res.SendLatency = s.P50, s.P99, l.P50
	return res, nil
}
