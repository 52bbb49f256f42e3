package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"slices"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Chart layout, in pixels.
const (
	chartW, chartH = 1200, 640
	marginL        = 70
	marginR        = 20
	panelTop1      = 40
	panelH         = 240
	panelGap       = 50
)

var faultColors = map[string]color.RGBA{
	faultMinority:     {255, 200, 200, 255},
	faultIsolateBusy:  {255, 220, 170, 255},
	faultIsolateMeta:  {240, 200, 255, 255},
	faultBridge:       {200, 220, 255, 255},
	faultKill:         {255, 170, 170, 255},
	faultPause:        {200, 255, 200, 255},
	faultRollingStart: {230, 230, 160, 255},
	faultDamageState:  {200, 160, 120, 255},
	// The reshaping kinds: an unlisted kind drew transparent black.
	faultSlotMove:      {180, 240, 240, 255},
	faultSplit:         {220, 240, 180, 255},
	faultNodeRemoveAdd: {250, 210, 230, 255},
	faultOperatorMove:  {210, 210, 210, 255},
}

// Axis labels: basicfont's glyphs are glyphW pixels wide; labels stand at
// least minLabelGap pixels apart.
const (
	glyphW      = 7
	minLabelGap = 3 * glyphW
)

// axisEnd is where the time axis ends: the last operation or fault, not
// when the chart is drawn (runEnd), which comes after the heal, the
// settling and the final reads, minutes after the workload on a long run.
func axisEnd(ops []history.Op, faults []fault, runEnd int64) int64 {
	var end int64
	for _, op := range ops {
		end = max(end, op.Invoke, op.Complete)
	}
	for _, f := range faults {
		end = max(end, f.End, f.Start)
	}
	if end <= 0 || end > runEnd {
		return runEnd
	}
	return end
}

// tickStep is the interval, in seconds, of the time axis labels of a span
// of spanSec seconds drawn over width pixels: the smallest "nice" step,
// 1, 2 or 5 × 10^k s, at which labels, the widest included, stand
// minLabelGap apart.
func tickStep(spanSec int64, width int) int64 {
	spanSec = max(spanSec, 1)
	for k := int64(1); ; k *= 10 {
		for _, m := range []int64{1, 2, 5} {
			step := m * k
			widest := len(tickLabel(spanSec/step*step)) * glyphW
			if step*int64(width) >= int64(widest+minLabelGap)*spanSec || step >= spanSec {
				return step
			}
		}
	}
}

func tickLabel(sec int64) string { return fmt.Sprintf("%ds", sec) }

// second is one second of the run: successful operations and their
// latencies.
type second struct {
	ok  int
	lat []time.Duration
}

// writeChart draws throughput (ok operations per second) and p99 latency
// per second, with the fault windows shaded, as Jepsen's charts do.
func writeChart(path string, ops []history.Op, faults []fault, runEnd int64) error {
	end := axisEnd(ops, faults, runEnd)
	secs := make([]second, end/1e9+1)
	for _, op := range ops {
		if op.Outcome != history.OK || op.Complete <= 0 {
			continue
		}
		i := min(int(op.Complete/1e9), len(secs)-1)
		secs[i].ok++
		secs[i].lat = append(secs[i].lat, time.Duration(op.Complete-op.Invoke))
	}
	img := image.NewRGBA(image.Rect(0, 0, chartW, chartH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	plotW := chartW - marginL - marginR
	x := func(ns int64) int { return marginL + int(float64(min(ns, end))/float64(max(end, 1))*float64(plotW)) }
	top2 := panelTop1 + panelH + panelGap

	for _, f := range faults {
		c := faultColors[f.Kind]
		for _, top := range []int{panelTop1, top2} {
			draw.Draw(img, image.Rect(x(f.Start), top, max(x(f.End), x(f.Start)+1), top+panelH), &image.Uniform{c}, image.Point{}, draw.Src)
		}
	}

	maxOK := 1
	maxLat := time.Millisecond
	p99 := make([]time.Duration, len(secs))
	for i, s := range secs {
		maxOK = max(maxOK, s.ok)
		if len(s.lat) > 0 {
			slices.Sort(s.lat)
			p99[i] = s.lat[min(len(s.lat)-1, len(s.lat)*99/100)]
			maxLat = max(maxLat, p99[i])
		}
	}
	blue, red := color.RGBA{30, 80, 200, 255}, color.RGBA{200, 40, 40, 255}
	logLat := func(d time.Duration) float64 {
		return math.Log10(float64(max(d, time.Millisecond)) / float64(time.Millisecond))
	}
	for i := 1; i < len(secs); i++ {
		x0, x1 := x(int64(i-1)*1e9+5e8), x(int64(i)*1e9+5e8)
		y0 := panelTop1 + panelH - secs[i-1].ok*panelH/maxOK
		y1 := panelTop1 + panelH - secs[i].ok*panelH/maxOK
		line(img, x0, y0, x1, y1, blue)
		if p99[i-1] > 0 && p99[i] > 0 {
			scale := float64(panelH) / math.Max(logLat(maxLat), 1)
			line(img, x0, top2+panelH-int(logLat(p99[i-1])*scale), x1, top2+panelH-int(logLat(p99[i])*scale), red)
		}
	}
	black := color.RGBA{0, 0, 0, 255}
	for _, top := range []int{panelTop1, top2} {
		line(img, marginL, top+panelH, chartW-marginR, top+panelH, black)
		line(img, marginL, top, marginL, top+panelH, black)
	}
	label(img, marginL, panelTop1-8, fmt.Sprintf("ok operations per second (max %d)", maxOK), black)
	label(img, marginL, top2-8, fmt.Sprintf("p99 latency per second, log scale from 1 ms (max %s)", maxLat.Round(time.Millisecond)), black)
	step := tickStep(end/1e9, plotW)
	for s := int64(0); s <= end/1e9; s += step {
		tx := x(s * 1e9)
		line(img, tx, top2+panelH, tx, top2+panelH+4, black)
		text := tickLabel(s)
		label(img, tx-len(text)*glyphW/2, top2+panelH+16, text, black) // centred on its tick
	}
	// The legend wraps: twelve kinds do not fit on one line.
	lx, ly := marginL, chartH-36
	for _, k := range faultKinds {
		w := 16 + glyphW*len(k) + 14
		if lx+w > chartW-marginR {
			lx, ly = marginL, ly+16
		}
		draw.Draw(img, image.Rect(lx, ly-11, lx+12, ly+1), &image.Uniform{faultColors[k]}, image.Point{}, draw.Src)
		label(img, lx+16, ly, k, black)
		lx += w
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func label(img *image.RGBA, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// line draws a straight line (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// unavailability is, per fault kind, the longest time without any
// successful append that ended during a fault or within 5 s after it.
func unavailability(ops []history.Op, faults []fault) map[string]time.Duration {
	var done []int64
	for _, op := range ops {
		if op.Kind == history.Append && op.Outcome == history.OK {
			done = append(done, op.Complete)
		}
	}
	slices.Sort(done)
	out := map[string]time.Duration{}
	for _, f := range faults {
		for i := 1; i < len(done); i++ {
			if done[i] > f.Start && done[i] <= f.End+5e9 {
				out[f.Kind] = max(out[f.Kind], time.Duration(done[i]-done[i-1]))
			}
		}
	}
	return out
}
