//go:build tools

// Package tools pins modules that packages under construction will import; delete once they do.
package tools
import (
 _ "github.com/cilium/ebpf"
 _ "github.com/cilium/ebpf/link"
 _ "github.com/cilium/ebpf/ringbuf"
 _ "github.com/jackc/pgx/v5"
 _ "github.com/jackc/pgx/v5/pgproto3"
 _ "github.com/pganalyze/pg_query_go/v6"
 _ "github.com/ClickHouse/clickhouse-go/v2"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/spf13/cobra"
 _ "go.yaml.in/yaml/v3"
 _ "github.com/google/gopacket/reassembly"
 _ "github.com/vishvananda/netlink"
 _ "cel.dev/cel-go/cel"
)
