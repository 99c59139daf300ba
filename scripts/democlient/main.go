// Command democlient is the demo's application: a Go pgx client that uses the extended
// protocol (prepared statements executed several times, a pipelined batch) the way ORMs
// and drivers do, so the demo shows that Vigil sees those statements too.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: democlient DSN")
		os.Exit(2)
	}
	if err := run(context.Background(), os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "democlient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for id := 1; id <= 2; id++ {
		var name string
		if err := conn.QueryRow(ctx, "SELECT name FROM customers WHERE id = $1", id).Scan(&name); err != nil {
			return err
		}
	}
	b := &pgx.Batch{}
	b.Queue("INSERT INTO customers (id, name, email) VALUES ($1, $2, $3)", 3, "Grace", "grace@example.net")
	b.Queue("UPDATE customers SET name = $1 WHERE id = $2", "Grace H.", 3)
	return conn.SendBatch(ctx, b).Close()
}
