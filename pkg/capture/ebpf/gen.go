package ebpf

// Regenerate the objects and Go bindings from bpf/ (needs clang and llvm-strip; the results
// are committed so `go build` does not). Output is byte-identical for identical sources.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../../bpf/headers" -target amd64,arm64 -type seg_hdr -type proc_hdr -type conn_rec -type unix_connect_rec -type tls_sock_rec -type lost_stats -type rec_kind -type hook_id -type seg_flags bpf ../../../bpf/capture.c
