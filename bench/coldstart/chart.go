package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chart draws the medians as grouped bars, one group per image, one bar
// per mode, each as a fraction of the image's OCI start (whose seconds
// the group's label gives), with the targets for the largest
// image as dashed lines.
func chart(cells []cell, images []string, label, path string) error {
	p := plot.New()
	p.Title.Text = "Container start to first line in a QEMU guest, registry link " + label
	p.Y.Label.Text = "median time, fraction of OCI's"
	w := vg.Points(12)
	colors := []color.Color{
		color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 255}, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 255}, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
		color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 255},
	}
	var names []string
	for _, im := range images {
		oci, _, _ := medians(cells, im, "oci")
		var size int64
		for _, c := range cells {
			if c.image == im && c.size > 0 {
				size = c.size
			}
		}
		names = append(names, fmt.Sprintf("%s\n%s Nydus blobs\nOCI %.1f s", im, mib(size), oci.Seconds()))
	}
	for i, m := range modes {
		var vs plotter.Values
		for _, im := range images {
			t, _, _ := medians(cells, im, m)
			oci, _, _ := medians(cells, im, "oci")
			v := 0.0
			if oci > 0 {
				v = t.Seconds() / oci.Seconds()
			}
			vs = append(vs, v)
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
	for _, t := range []struct {
		y    float64
		name string
	}{{0.2, "target, largest image: cold ≤ 0.2"}, {0.1, "target, largest image: warm ≤ 0.1"}} {
		y := t.y
		f := plotter.NewFunction(func(float64) float64 { return y })
		f.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		f.Color = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255}
		if y < 0.15 {
			f.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
		}
		p.Add(f)
		p.Legend.Add(t.name, f)
	}
	p.Legend.Top = true
	p.Legend.Left = false
	p.Y.Min = 0
	if p.Y.Max < 1.3 {
		p.Y.Max = 1.3
	}
	p.Y.Max *= 1.6 // room for the legend
	p.NominalX(names...)
	p.X.Min, p.X.Max = p.X.Min-0.5, p.X.Max+0.5 // whole bar groups at the edges
	return p.Save(8*vg.Inch, 4.5*vg.Inch, path)
}
