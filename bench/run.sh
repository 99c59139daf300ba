#!/usr/bin/env bash
# make bench: the benchmarks behind BENCHMARKS.md, run side by side on this machine. They
# are not tests: they take minutes and report numbers. Run them on a quiet machine; the
# results are medians of interleaved rounds because these 2-core machines are noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10s}

echo "## capture overhead (agent attached vs not), $(date -u +%FT%TZ), $(nproc) cores"
go run ./bench/capture -vigil bin/vigil -rounds "$ROUNDS" -duration "$DURATION"

echo; echo "## proxy vs direct vs PgBouncer (session)"
go run ./bench/proxy -vigil bin/vigil -rounds "${PROXY_ROUNDS:-3}" -duration "$DURATION"

echo; echo "## steering: connect() of an unflagged process, steered pgbench vs pointed at the proxy"
go run ./bench/steer -vigil bin/vigil -rounds "$ROUNDS" -duration "$DURATION"

echo; echo "## micro-benchmarks (policy decisions, decoder, reassembly, trail sealing)"
go test -run '^$' -bench 'Decide|Classify' -benchtime 20000x ./pkg/policy ./pkg/sqlparse
go test -run '^$' -bench . -benchtime 20000x ./pkg/capture/postgres ./pkg/capture/tcpstream
go test -run '^$' -bench . -benchtime 200000x ./pkg/audit
