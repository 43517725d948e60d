// Package layering holds no code: its test checks that the packages'
// dependencies point one way, as docs/architecture.md draws them (cmd →
// api/vfs → filesystems → storage → backend; vhostuser → virtqueue), so
// that a filesystem never needs the transport that serves it and the
// storage layer never needs the filesystems above it.
package layering
