package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreate(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte(strings.Repeat("data", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "prefetch")
	os.WriteFile(list, []byte("/f\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"v6 defaults", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}", src}, 0},
		{"options after source", []string{src, "--bootstrap", "{out}/boot", "--blob-dir", "{out}", "--compressor", "zstd"}, 0},
		{"v5 lz4 sha256", []string{"--fs-version", "5", "--compressor", "lz4_block", "--digester", "sha256",
			"--chunk-size", "0x10000", "--bootstrap", "{out}/boot", "--blob-dir", "{out}", src}, 0},
		{"blob file and prefetch", []string{"--bootstrap", "{out}/boot", "--blob", "{out}/blob", "--prefetch-policy", "fs",
			"--prefetch-files", list, "--blob-inline-meta", src}, 0},
		{"no source", []string{"--bootstrap", "{out}/boot", "--blob-dir", "{out}"}, 2},
		{"bad chunk size", []string{"--chunk-size", "3000", "--bootstrap", "{out}/boot", "--blob-dir", "{out}", src}, 2},
		{"bad compressor", []string{"--compressor", "brotli", "--bootstrap", "{out}/boot", "--blob-dir", "{out}", src}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			var args []string
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "{out}", out))
			}
			if code := runCreate(args); code != tc.code {
				t.Fatalf("exit code %d, want %d", code, tc.code)
			}
			_, err := os.Stat(filepath.Join(out, "boot"))
			if (err == nil) != (tc.code == 0) {
				t.Errorf("bootstrap present: %v, want %v", err == nil, tc.code == 0)
			}
		})
	}
}
