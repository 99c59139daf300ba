#!/usr/bin/env bash
# Installs, from Debian's packages, what building, testing and the demo need, skipping what
# is already there. Safe to run again. Needs root.
set -euo pipefail

pkgs=(
  postgresql-15 postgresql-client-15 pgbouncer   # servers and clients the tests drive
  clickhouse-server clickhouse-client            # the audit store of record
  zookeeper                                      # the cluster tests' replication (run standalone, not as a service)
  mariadb-server mariadb-client sysbench        # MariaDB capture and proxy tests, MySQL benchmarks
  default-jdk-headless libpostgresql-jdbc-java libmariadb-java  # the JDBC clients in the proxy tests
  python3-pymysql python3-mysqldb                # the Python MySQL clients in the proxy tests
  chromium fonts-dejavu-core                     # the browser the approval page's test drives
  clang llvm libbpf-dev bpftool                  # make generate (eBPF objects)
  iproute2 procps util-linux ca-certificates git make gcc
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# eBPF needs tracefs (tracepoint ids) and bpffs; container-like hosts often lack the mounts.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || true

command -v go >/dev/null || { echo "Go is required (https://go.dev/doc/install); not found in PATH" >&2; exit 1; }
