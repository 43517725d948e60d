package check

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSoakWorkerOnHost runs the guest soak's worker for a second on a host
// directory (with a small image-like tree to read) and checks its journal
// and its report.
func TestSoakWorkerOnHost(t *testing.T) {
	dir, img := t.TempDir(), t.TempDir()
	if err := OverlayLower(img); err != nil {
		t.Fatal(err)
	}
	want, _, err := Build(img, ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	st := RunSoakWorker(dir, img, want, 3, time.Now().Add(time.Second))
	if len(st.Errors) > 0 {
		t.Fatalf("errors: %v", st.Errors)
	}
	if st.Rounds < 2 || st.Ops["image-read"] != st.Rounds || uint64(st.Ops["unlink"]) != 3*uint64(st.Rounds) {
		t.Fatalf("rounds %d, ops %v", st.Rounds, st.Ops)
	}
	n, err := CountJournal(filepath.Join(dir, "w3", SoakJournal))
	if err != nil || n != st.Rounds {
		t.Fatalf("journal: %d rounds, %v; want %d", n, err, st.Rounds)
	}
	names, _ := os.ReadDir(filepath.Join(dir, "w3"))
	if len(names) != 1 {
		t.Errorf("w3 holds %d entries, want only the journal", len(names))
	}
	var all SoakStats
	all.Merge(&st)
	all.Merge(&st)
	if all.Lat.Count() != 2*st.Lat.Count() || all.Lat.Quantile(0.99) < all.Lat.Quantile(0.5) {
		t.Errorf("merged histogram: %d entries, p50 %v p99 %v", all.Lat.Count(), all.Lat.Quantile(0.5), all.Lat.Quantile(0.99))
	}
}

func TestLatHistQuantile(t *testing.T) {
	var h LatHist
	for range 99 {
		h.Add(3 * time.Microsecond) // bucket [2,4)
	}
	h.Add(time.Millisecond) // bucket [512,1024) -> 1024
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 4}, {0.99, 4}, {1, 1024}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("q%v = %v, want %v", c.q, got, c.want)
		}
	}
}
