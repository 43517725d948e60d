// Package testenv decides what a test does when this host lacks something
// it needs (root, /dev/fuse, loop devices, EROFS, QEMU, a tool).
//
// On a developer's machine such a test skips. CI has all of them, so there a
// skip would only hide a test that never ran: with NVFS_REQUIRE_ALL=1 in the
// environment (.ci/run sets it) every such skip fails the test instead.
// Skips that are a choice of the runner (-short) stay plain t.Skip.
package testenv
