package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/convert"
)

// hasTargetFlag reports whether check was asked about a registry image
// (nydusify check) rather than a bootstrap file.
func hasTargetFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--target" || strings.HasPrefix(a, "--target=") {
			return true
		}
	}
	return false
}

// runCheckTarget is nydusify check: the manifest, bootstrap and (with
// --source) filesystem rules on a Nydus image in a registry.
func runCheckTarget(args []string) int {
	cmd := newCommand("check", "--target REF [--source REF] [flags]", checkTargetLong)
	fs := cmd.Flags()
	var o convert.CheckOptions
	var outJSON string
	fs.StringVar(&o.Target, "target", "", "Nydus image reference")
	fs.StringVar(&o.Source, "source", "", "source image reference: also compare config.config and every file")
	fs.BoolVar(&o.TargetInsecure, "target-insecure", false, "target registry over plain HTTP or unverified TLS")
	fs.BoolVar(&o.SourceInsecure, "source-insecure", false, "source registry over plain HTTP or unverified TLS")
	fs.BoolVar(&o.PlainHTTP, "plain-http", false, "both registries over plain HTTP")
	fs.StringVar(&o.Platform, "platform", "", "check only this platform of an index")
	fs.StringVar(&o.WorkDir, "work-dir", "", "keep downloaded bootstraps and blobs here")
	storage := addBackendFlags(fs)
	logLevel := addLogLevel(fs)
	fs.StringVar(&outJSON, "output-json", "", "write the report as JSON to this file")
	return execute(cmd, args, func([]string) error {
		if _, err := toolLogger(*logLevel, ""); err != nil {
			return err
		}
		if o.Target == "" {
			return usageErrorf("--target is required")
		}
		var err error
		if o.Backend, err = storage(); err != nil {
			return usageErrorf("%v", err)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		rep, err := convert.Check(ctx, o)
		if err != nil {
			return err
		}
		if outJSON != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(outJSON, append(b, '\n'), 0o644); err != nil {
				return fmt.Errorf("--output-json: %w", err)
			}
		}
		for _, p := range rep.Problems {
			fmt.Fprintln(os.Stderr, p)
		}
		if !rep.OK() {
			return fmt.Errorf("%s: %d problems in %d manifests", o.Target, len(rep.Problems), len(rep.Manifests))
		}
		fmt.Printf("%s: %d manifests pass the manifest and bootstrap rules", o.Target, len(rep.Manifests))
		if o.Source != "" {
			fmt.Printf(" and match %s (%d paths compared)", o.Source, rep.FilesCompared)
		}
		fmt.Println()
		return nil
	})
}

const checkTargetLong = `Check a Nydus image in a registry, as nydusify check does: the manifest rules, the
bootstrap rules and, with --source, the filesystem rule, which mounts the Nydus
image lazily from the registry through this daemon and compares every path with the
source image's layers applied in order.`
