# nydus-virtiofsd: build, test, demo.
GO        ?= go
BIN       := bin/nydus-virtiofsd
FUZZTIME  ?= 5s
PKGS      := ./...

.PHONY: all build test unit vet fmt-check fuzz-smoke bench demo clean deps test-deps

all: build

build:
	$(GO) build -o $(BIN) ./cmd/nydus-virtiofsd

# deps installs the Debian packages the tests use (QEMU, a guest kernel is
# fetched by guest-tests itself, busybox, erofs-utils, fuse3, attr).
deps:
	bash scripts/install-deps.sh

# test-deps adds what only the tests use: SeaweedFS's weed, built from
# the Go module proxy (the S3 server that checks signatures).
test-deps:
	GO=$(GO) bash scripts/install-seaweedfs.sh

# test runs every test: vet and gofmt, unit and integration tests (guest
# tests included), and a short run of every fuzz target.
test: deps test-deps fmt-check vet unit fuzz-smoke

unit:
	$(GO) test -count=1 -timeout 25m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fuzz-smoke:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz-smoke.sh

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x $(PKGS)

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin
