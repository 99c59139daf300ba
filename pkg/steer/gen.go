package steer

// Regenerate the object and Go bindings from bpf/steer.c (needs clang and llvm-strip; the
// results are committed so `go build` does not).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../bpf/headers -I../../bpf" -target amd64,arm64 -type steer_addr -type steer_info -type steer_path -type steer_prefix steer ../../bpf/steer.c
