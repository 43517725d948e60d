package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chart draws the medians as grouped bars: one group per image, one bar
// per mode.
func chart(cells []cell, images []string, label, path string) error {
	p := plot.New()
	p.Title.Text = "Container start to first line in a QEMU guest, registry link " + label
	p.Y.Label.Text = "median seconds"
	w := vg.Points(14)
	colors := []color.Color{
		color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 255}, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 255}, color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 255},
	}
	for i, m := range modes {
		var vs plotter.Values
		for _, im := range images {
			t, _, _ := medians(cells, im, m)
			vs = append(vs, t.Seconds())
		}
		bars, err := plotter.NewBarChart(vs, w)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		bars.Color = colors[i%len(colors)]
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(len(modes)-1)/2)
		p.Add(bars)
		p.Legend.Add(m, bars)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Points(50)
	p.Y.Min = 0
	p.Y.Max *= 1.45 // room for the legend
	p.NominalX(images...)
	p.X.Min, p.X.Max = p.X.Min-0.5, p.X.Max+0.5 // whole bar groups at the edges
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}
