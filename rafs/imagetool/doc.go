// Package imagetool does what the image subcommands do with an opened RAFS
// image besides serving it: WriteTar unpacks the tree into a tar archive
// (`nydus-virtiofsd unpack`, like `nydus-image unpack`). It reads the image
// through the rafs reader's public calls only.
package imagetool
