#!/usr/bin/env bash
# Fetches libchdb.so (ClickHouse 26.5 in-process, from the npm registry) into a cache
# directory outside the repo and prints its path. The tests tagged `chdb` use it to check
# that the modern DDL, forensic and dashboard queries are valid on a current ClickHouse.
set -euo pipefail
dir=${CHDB_CACHE:-/var/cache/vigil-chdb}
lib=$dir/package/libchdb.so
if [[ ! -s $lib ]]; then
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent @chdb/lib-linux-x64-gnu@26.5.3 >/dev/null && tar xzf chdb-lib-linux-x64-gnu-26.5.3.tgz)
fi
echo "$lib"
