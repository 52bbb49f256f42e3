package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// TestTickStep: the time axis is labelled at a nice step (1, 2, 5 × 10^k
// s), the smallest at which no two labels, the widest included, come
// closer than minLabelGap over the chart's plot width.
func TestTickStep(t *testing.T) {
	plotW := chartW - marginL - marginR
	cases := []struct {
		span int64 // seconds
		want int64
	}{
		{30, 2},
		{160, 10},
		{600, 50},
		{3600, 200},
		{1, 1},
		{0, 1},
	}
	for _, tc := range cases {
		got := tickStep(tc.span, plotW)
		if got != tc.want {
			t.Errorf("span %ds: step %ds, want %ds", tc.span, got, tc.want)
		}
		if !labelsApart(tc.span, got, plotW) {
			t.Errorf("span %ds: labels every %ds overlap", tc.span, got)
		}
		if smaller := prevNice(got); smaller > 0 && tc.span > 1 && labelsApart(tc.span, smaller, plotW) {
			t.Errorf("span %ds: step %ds is not the smallest readable one (%ds is)", tc.span, got, smaller)
		}
	}
}

// labelsApart reports whether labels every step seconds, centred on their
// ticks, leave minLabelGap between neighbours.
func labelsApart(span, step int64, width int) bool {
	px := func(s int64) float64 { return float64(s) / float64(max(span, 1)) * float64(width) }
	for s := step; s <= span; s += step {
		prevW, w := len(tickLabel(s-step))*glyphW, len(tickLabel(s))*glyphW
		if px(s)-float64(w)/2-(px(s-step)+float64(prevW)/2) < minLabelGap {
			return false
		}
	}
	return true
}

// prevNice is the nice step below step (0 below 1).
func prevNice(step int64) int64 {
	switch k := step / leading(step); leading(step) {
	case 1:
		return k / 10 * 5
	case 2:
		return k
	default:
		return 2 * k
	}
}

// leading is step's first digit (1, 2 or 5).
func leading(step int64) int64 {
	for step >= 10 {
		step /= 10
	}
	return step
}

// TestAxisEnd: the axis ends with the last operation or fault, not when
// the chart is drawn minutes after the workload stopped.
func TestAxisEnd(t *testing.T) {
	s := int64(time.Second)
	cases := []struct {
		name   string
		ops    []history.Op
		faults []fault
		runEnd int64
		want   int64
	}{
		{"last op", []history.Op{{Invoke: 10 * s, Complete: 11 * s}, {Invoke: 599 * s, Complete: 600 * s}}, nil, 850 * s, 600 * s},
		{"an op with no outcome", []history.Op{{Invoke: 590 * s}}, nil, 850 * s, 590 * s},
		{"a fault healed last", []history.Op{{Invoke: 1 * s, Complete: 2 * s}}, []fault{{Start: 5 * s, End: 610 * s}}, 850 * s, 610 * s},
		{"no data", nil, nil, 30 * s, 30 * s},
	}
	for _, tc := range cases {
		if got := axisEnd(tc.ops, tc.faults, tc.runEnd); got != tc.want {
			t.Errorf("%s: axis ends at %s, want %s", tc.name, time.Duration(got), time.Duration(tc.want))
		}
	}
}

// TestWriteChart draws a ten-minute run whose chart is written 250 s after
// its last operation. CHART_OUT=path keeps the PNG to look at.
func TestWriteChart(t *testing.T) {
	s := int64(time.Second)
	var ops []history.Op
	for i := range int64(600 * 20) {
		at := i * s / 20
		lat := 2 * int64(time.Millisecond)
		if at/s%120 > 100 { // slower during the faults
			lat = 300 * int64(time.Millisecond)
		}
		ops = append(ops, history.Op{Kind: history.Append, Outcome: history.OK, Invoke: at, Complete: at + lat})
	}
	var faults []fault
	for i, k := range faultKinds[:5] {
		start := int64(i*120+100) * s
		faults = append(faults, fault{Kind: k, Start: start, End: start + 20*s})
	}
	path := os.Getenv("CHART_OUT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "chart.png")
	}
	if err := writeChart(path, ops, faults, 850*s); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart.png: %v", err)
	}
	if b := img.Bounds(); b.Dx() != chartW || b.Dy() != chartH {
		t.Fatalf("chart is %dx%d, want %dx%d", b.Dx(), b.Dy(), chartW, chartH)
	}
	// The throughput line reaches the right end of the plot: the axis ends
	// with the data (with the old axis it stopped at 600/850 of the width).
	top2 := panelTop1 + panelH + panelGap
	blue := false
	for y := panelTop1; y < top2 && !blue; y++ {
		for x := chartW - marginR - 3; x < chartW-marginR; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if r>>8 == 30 && g>>8 == 80 && b>>8 == 200 {
				blue = true
			}
		}
	}
	if !blue {
		t.Errorf("the throughput line does not reach the right end of the plot")
	}
}
