package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// peersChartSeries are the configurations in the chart, left to right
// within each workload, with their colors.
var peersChartSeries = []struct {
	name  string
	color color.NRGBA
}{
	{cfgDirect, color.NRGBA{R: 214, G: 69, B: 65, A: 255}},
	{cfgResolver, color.NRGBA{R: 240, G: 160, B: 50, A: 255}},
	{cfgFlypg, color.NRGBA{R: 60, G: 130, B: 200, A: 255}},
}

// peersBarWidth is the room of one bar within a group, in points.
const peersBarWidth = 42

var peersChartWorkloads = []struct{ key, label string }{
	{"write", "write (Create)"},
	{"page", fmt.Sprintf("page (1 write + %d reads)", peersPageReads)},
	{"tx5", "tx5 (5-statement transaction)"},
}

// writePeersChart draws the p50 and p99 latencies of every workload and
// configuration as grouped bars: the solid bar is the p50, the light bar
// behind it reaches the p99. A configuration a workload does not measure
// (dbresolver's tx5) is marked n/a.
func writePeersChart(path string, r results) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("replica-region GORM app, every cross-region link +%s ms RTT\n"+
		"stale read-backs after a write: dbresolver %s, flypg %s of %s",
		format(r["rtt_ms"]), format(r["stale_reads_dbresolver"]), format(r["stale_reads_flypg"]), format(r["cycles"]))
	p.Y.Label.Text = "latency, ms (solid: p50, light: p99; labels p50 over p99)"
	p.Y.Min = 0
	// Half a group of room on each side, for the outer bars.
	p.X.Min, p.X.Max = -0.5, float64(len(peersChartWorkloads))-0.5
	p.Legend.Top = true
	p.Add(plotter.NewGrid()) // first, behind the bars

	var names []string
	top := 0.0
	for _, w := range peersChartWorkloads {
		names = append(names, w.label)
		for _, s := range peersChartSeries {
			top = max(top, r[metric(w.key, "p99", s.name)])
		}
	}
	p.NominalX(names...)
	for i, s := range peersChartSeries {
		offset := vg.Points(peersBarWidth * float64(i-(len(peersChartSeries)-1)/2))
		p50, p99, labels := peersSeries(r, s.name)
		light := s.color
		light.A = 90
		// The p99 bar first, so that the p50 bar is drawn over it.
		if _, err := peersBars(p, p99, light, offset); err != nil {
			return err
		}
		solid, err := peersBars(p, p50, s.color, offset)
		if err != nil {
			return err
		}
		p.Legend.Add(s.name, solid)
		l, err := peersLabels(p99, labels, offset)
		if err != nil {
			return err
		}
		p.Add(l)
	}
	// Room above the tallest bar for its label.
	p.Y.Max = top * 1.15
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	return p.Save(24*vg.Centimeter, 14*vg.Centimeter, path)
}

// peersBars adds one bar per workload, shifted by offset within its group.
func peersBars(p *plot.Plot, v plotter.Values, c color.Color, offset vg.Length) (*plotter.BarChart, error) {
	bc, err := plotter.NewBarChart(v, vg.Points(peersBarWidth-4))
	if err != nil {
		return nil, err
	}
	bc.Color, bc.Offset = c, offset
	bc.LineStyle.Width = 0
	p.Add(bc)
	return bc, nil
}

func metric(workload, pct, cfg string) string {
	return fmt.Sprintf("%s_%s_ms_%s", workload, pct, cfg)
}

// peersSeries returns one configuration's p50s, p99s and bar labels, in
// workload order.
func peersSeries(r results, cfg string) (p50, p99 plotter.Values, labels []string) {
	for _, w := range peersChartWorkloads {
		a, okA := r[metric(w.key, "p50", cfg)]
		b := r[metric(w.key, "p99", cfg)]
		p50, p99 = append(p50, a), append(p99, b)
		if !okA {
			labels = append(labels, "n/a")
			continue
		}
		labels = append(labels, fmt.Sprintf("%.1f\n%.1f", a, b))
	}
	return p50, p99, labels
}

// peersLabels puts labels centered above the bars at offset.
func peersLabels(heights plotter.Values, labels []string, offset vg.Length) (*plotter.Labels, error) {
	xys := make(plotter.XYs, len(heights))
	for i, h := range heights {
		xys[i] = plotter.XY{X: float64(i), Y: h}
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].YAlign = draw.YBottom
		l.TextStyle[i].Font.Size = vg.Points(8)
		if strings.HasPrefix(labels[i], "n/a") {
			l.TextStyle[i].Color = color.Gray{Y: 120}
		}
	}
	l.Offset = vg.Point{X: offset, Y: vg.Points(2)}
	return l, nil
}
