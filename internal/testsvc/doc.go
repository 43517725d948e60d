// Package testsvc starts real services on 127.0.0.1 for tests and stops
// them when the test ends: Debian's docker-registry (distribution 2.8)
// plain, with htpasswd Basic auth, with token auth (an in-test token
// issuer signs ES256 JWTs with a key whose certificate the registry
// trusts) or with its S3 storage driver redirecting blob GETs to an S3
// server; npm's s3rver as the S3 server, and SeaweedFS as the S3 server
// that checks signatures; nginx as a forward proxy; and a
// fault injector (a test-owned reverse proxy that injects 5xx, resets,
// truncated bodies, stalls, 401s and 403s on redirect targets).
//
// Everything here is real except the fault injector, which exists to break
// things on purpose. A missing binary skips through internal/testenv
// (a failure under NVFS_REQUIRE_ALL=1); scripts/install-deps.sh and
// scripts/install-seaweedfs.sh install them all.
//
//	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken})
//	id := reg.PushBlob(t, data) // hex sha256
//	// reg.Host, reg.Repo, reg.AuthB64() go into a registry backend config.
package testsvc
