package virtqueue

import "encoding/binary"

// Ring fields are little-endian (virtio 1.0); the 16-bit indexes go through
// internal/ring's single-access helpers.
var le = binary.LittleEndian
