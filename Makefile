# Vigil — build, test, generate, benchmark. `make help` lists the targets.
GO        ?= go
BIN       := bin/vigil
PKGS      := ./...
# -p 1: the end-to-end tests each load eBPF programs that see every server on the host and
# time short-lived clients; running packages one at a time keeps them from starving each other.
TEST_FLAGS ?= -count=1 -p 1 -timeout 25m

.PHONY: help build test vet lint race check generate check-generate bench demo clean fuzz

# The packages whose tests need no eBPF: they also run under the race detector. The capture
# packages are left out because their tests load kernel programs that the race runtime's
# slowdown makes miss their timing (and cmd/agent's end-to-end tests run all of capture).
RACE_PKGS = $(shell $(GO) list ./pkg/... ./internal/... | grep -v -e '/pkg/capture$$' -e '/pkg/capture/ebpf$$')

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/vigil
	$(GO) build -o $(BIN) ./cmd/agent

vet: ## go vet every package
	$(GO) vet $(PKGS)

lint: ## gofmt, go vet and staticcheck (a go tool in go.mod) over every package
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

race: ## the tests that need no eBPF, under the race detector
	$(GO) test -race $(TEST_FLAGS) $(RACE_PKGS)

check: lint race ## what CI gates on besides `make test`

test: vet ## run every test (needs root for the eBPF and server tests; CHDB_LIB_PATH adds the ClickHouse 26.5 checks)
	$(GO) test $(TEST_FLAGS) $(PKGS)
	@if [ -n "$$CHDB_LIB_PATH" ]; then \
	  echo "== ClickHouse 26.5 (chDB) checks"; \
	  $(GO) test $(TEST_FLAGS) -tags chdb -run Chdb ./pkg/store/clickhouse/; \
	else echo "CHDB_LIB_PATH not set: skipping the ClickHouse 26.5 (chDB) checks (scripts/chdb.sh fetches the library)"; fi

generate: ## regenerate the eBPF objects from bpf/ (needs clang, llvm, libbpf-dev, bpftool)
	$(GO) generate ./pkg/capture/ebpf/... ./pkg/steer/...

check-generate: generate ## fail when the committed eBPF objects do not match bpf/
	@git diff --exit-code --stat -- pkg/capture/ebpf pkg/steer bpf || { echo "committed eBPF objects are stale: run 'make generate' and commit" >&2; exit 1; }

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for t in $$(grep -rl '^func Fuzz' --include='*_test.go' pkg | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== $$t $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} ./$$t || exit 1; \
	  done; done

bench: build ## run the benchmarks in bench/ and print results for BENCHMARKS.md
	bench/run.sh

demo: ## build, start a throwaway PostgreSQL, run the agent, show captured statements
	scripts/demo.sh

clean: ## remove build output
	rm -rf bin
