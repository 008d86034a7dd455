# diskd — build, run, test, benchmark. `make help` lists the targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
# The whole suite stays under 10 minutes on 2 cores; -p 1 keeps root
# integration tests (loop devices, namespaces) from competing for the CPU.
TESTFLAGS ?= -count=1 -timeout 15m
FUZZTIME  ?= 10s
# make test's short fuzz run is counted in executions, not seconds: with a
# duration, go1.26's fuzz coordinator can report its own deadline as a
# failure ("context deadline exceeded", go.dev/issue/75804, fixed in go1.27).
FUZZSHORT ?= 20000x

.PHONY: all build run test fuzz-short fuzz bench reliability vet fmt clean help

all: build

help:
	@echo "make build    bin/diskd and bin/diskctl"
	@echo "make run      the daemon in the foreground with defaults for whoever runs it"
	@echo "make test     every test (root integration tests skip clearly when not root)"
	@echo "make bench    the figures: latency, round trips, RSS, CPU, scans per burst"
	@echo "make fuzz     long fuzz runs (FUZZTIME=$(FUZZTIME) each)"
	@echo "make reliability  the reliability suite's long form (floods, forgeries, kills, broken blkid, many clients; root) and its figures"
	@echo "make package  .deb and .rpm in dist/; make install DESTDIR=... PREFIX=..."

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/diskd ./cmd/diskd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/diskctl ./cmd/diskctl

# The daemon in the foreground. As root it uses /var/lib/diskd and
# /run/diskd/diskd.sock; as anyone else $XDG_STATE_HOME/diskd and
# $XDG_RUNTIME_DIR/diskd/diskd.sock. Extra flags: make run ARGS='--log-level debug'.
run: build
	$(BIN)/diskd $(ARGS)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

test: build vet
	$(GO) test $(TESTFLAGS) ./...
	$(MAKE) fuzz-short

# A short run of every fuzz target on each `make test`; `make fuzz` runs long.
fuzz-short:
	@for t in $$($(GO) test -list '^Fuzz' ./pkg/... | grep '^Fuzz' ); do \
	  pkg=$$(grep -rl "func $$t(" pkg --include='*_test.go' | head -1 | xargs dirname); \
	  echo "fuzz $$t in ./$$pkg ($(FUZZSHORT))"; \
	  $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZSHORT) ./$$pkg || exit 1; \
	done

fuzz:
	@for t in $$($(GO) test -list '^Fuzz' ./pkg/... | grep '^Fuzz' ); do \
	  pkg=$$(grep -rl "func $$t(" pkg --include='*_test.go' | head -1 | xargs dirname); \
	  $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

# End-to-end figures (real daemons, loop devices, namespaces; root) run once
# each and report medians and p99s as custom metrics beside a baseline
# measured in the same run; micro-benchmarks of the packages run as usual.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 40m ./test/
	$(GO) test -run '^$$' -bench . -count 1 -timeout 20m ./pkg/...

# The reliability suite's long form (issue 10; `make test` runs a short
# form of each case): real daemons on namespace hosts attacked or broken,
# each case printing "figure:" lines, gathered at the end. ~7 minutes.
# DISKD_RELIABILITY_DISKD=PATH runs the targets from another diskd build.
reliability: build
	@rc=0; $(GO) test -count=1 -timeout 60m -v -run '^TestReliability|^TestBlkidHangsFailsOrPrintsGarbage$$|^TestWatchdogStopsWhenALoopIsWedged$$' \
	  ./test/ -args -reliability > $(BIN)/reliability.log 2>&1 || rc=$$?; \
	grep -E '^(--- |ok|FAIL)|figure: ' $(BIN)/reliability.log | sed 's/^ *//'; \
	echo "full log: $(BIN)/reliability.log"; exit $$rc

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) dist

-include packaging/package.mk
