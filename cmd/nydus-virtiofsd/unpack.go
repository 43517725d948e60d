package main

import (
	"bufio"
	"context"
	"os"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/imagetool"
)

// runUnpack is `nydus-image unpack`: write the image's tree as a tar.
func runUnpack(args []string) int {
	fs := newFlagSet("unpack", "--bootstrap B --blob-dir D --output OUT.tar")
	var f imageFlags
	f.register(fs, true)
	output := fs.String("output", "", "tar file to write")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *output == "" {
		return failf("unpack", "--output is required")
	}
	img, err := f.open(true)
	if err != nil {
		return failf("unpack", "%v", err)
	}
	defer img.Close()
	out, err := os.Create(*output)
	if err != nil {
		return failf("unpack", "%v", err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	err = imagetool.WriteTar(context.Background(), img, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*output)
		return failf("unpack", "%s: %v", f.bootstrap, err)
	}
	return 0
}
