package main

import (
	"bufio"
	"context"
	"fmt"
	"os"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/imagetool"
)

const unpackLong = `Write a RAFS image's tree to a tar file, as nydus-image unpack does. The blobs are
looked up in --blob-dir (or --blob, or the backend of --config); without any of
these, beside the bootstrap. Every blob must open before anything is written.
The data is copied as stored: it is checked against the chunk digests only with
--digest-validate (or digest_validate in the --config); the last line says which.`

// runUnpack is `nydus-image unpack`: write the image's tree as a tar.
func runUnpack(args []string) int {
	cmd := newCommand("unpack", "--bootstrap FILE [--blob-dir DIR | --blob FILE | --config FILE] --output FILE.tar", unpackLong)
	var f imageFlags
	f.register(cmd.Flags())
	output := cmd.Flags().StringP("output", "o", "", "tar file to write (required)")
	logLevel := addLogLevel(cmd.Flags())
	return execute(cmd, args, func([]string) error {
		log, err := toolLogger(*logLevel, "")
		if err != nil {
			return err
		}
		if err := required(cmd.Flags(), "bootstrap", "output"); err != nil {
			return err
		}
		defer f.closeCache() // after the image: its last chunk-map marks are synced
		img, err := f.openVerified(quietImageLog(log))
		if err != nil {
			return err
		}
		defer img.Close()
		if err := writeTarFile(img, *output); err != nil {
			return err
		}
		if f.validate {
			fmt.Fprintf(os.Stderr, "wrote %s; every chunk was verified against its digest\n", *output)
		} else {
			fmt.Fprintf(os.Stderr, "wrote %s; data not verified against the chunk digests (pass --digest-validate to verify)\n", *output)
		}
		return nil
	})
}

// writeTarFile writes img's tree to the file name as a tar whose first
// entry is the root directory "./"; a failed write leaves no file.
func writeTarFile(img *rafs.Image, name string) error {
	out, err := os.Create(name)
	if err != nil {
		return flagPathError("--output", name, err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	err = imagetool.WriteRootEntry(img, w)
	if err == nil {
		err = imagetool.WriteTar(context.Background(), img, w)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		err = fmt.Errorf("writing %s: %w", name, err)
	}
	if err != nil {
		os.Remove(name)
	}
	return err
}
