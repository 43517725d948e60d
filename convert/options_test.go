package convert

import (
	"context"
	"strings"
	"testing"
)

// TestBatchSizeRefused: batch chunks cannot be read by the daemon yet, so
// a conversion asking for them fails at once, naming the flag, before
// anything is pulled or pushed.
func TestBatchSizeRefused(t *testing.T) {
	_, err := Convert(context.Background(), Options{Source: "127.0.0.1:1/none:v1", Target: "127.0.0.1:1/none:nydus",
		BatchSize: 0x100000, CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--batch-size") {
		t.Fatalf("error %v, want one naming --batch-size", err)
	}
}
