package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// errorKind sorts failures by what the exporter should do about them.
type errorKind string

const (
	// kindRetryable: the server is away, overloaded or the network failed; try again.
	kindRetryable errorKind = "retryable"
	// kindConfig: wrong address, database, credentials or privileges; nothing resends can
	// fix, but an operator can, so keep the spool and keep trying slowly.
	kindConfig errorKind = "config"
	// kindSchema: the rows do not fit the table (a column or type mismatch); resending the
	// same batch fails the same way, so it goes to the dead-letter file.
	kindSchema errorKind = "schema"
)

// Exception codes (ClickHouse's ErrorCodes.cpp), stable across releases.
const (
	codeNoSuchColumn      = 16
	codeTypeMismatch      = 53
	codeUnknownTable      = 60
	codeCannotConvertType = 70
	codeUnknownIdentifier = 47
	codeNotImplemented    = 48 // e.g. an ALTER this server cannot do: only an upgrade fixes it
	codeCannotParseText   = 6
	codeUnknownDatabase   = 81
	codeReadonly          = 164
	codeUnknownUser       = 192
	codeWrongPassword     = 193
	codeRequiredPassword  = 194
	codeIPNotAllowed      = 195
	codeAccessDenied      = 497
	codeAuthFailed        = 516
)

func classify(err error) errorKind {
	var ex *ch.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case codeNoSuchColumn, codeTypeMismatch, codeCannotConvertType, codeUnknownIdentifier, codeCannotParseText:
			return kindSchema
		case codeUnknownDatabase, codeUnknownTable, codeReadonly, codeUnknownUser, codeWrongPassword, codeRequiredPassword,
			codeIPNotAllowed, codeAccessDenied, codeAuthFailed, codeNotImplemented:
			return kindConfig
		}
	}
	return kindRetryable
}

// isUnknownDatabase: the store's database does not exist (at login or in a statement).
func isUnknownDatabase(err error) bool {
	var ex *ch.Exception
	return errors.As(err, &ex) && ex.Code == codeUnknownDatabase
}

// isNotImplemented: the server cannot do what the statement asks (an ALTER of its version).
func isNotImplemented(err error) bool {
	var ex *ch.Exception
	return errors.As(err, &ex) && ex.Code == codeNotImplemented
}

// isUnknownTable: a table the statement names does not exist.
func isUnknownTable(err error) bool {
	var ex *ch.Exception
	return errors.As(err, &ex) && ex.Code == codeUnknownTable
}

// describe turns a driver error into one that names the problem and the fix, for logs and
// for `vigil store migrate`.
func describe(err error, cfg Config) error {
	if err == nil {
		return nil
	}
	where := fmt.Sprintf("ClickHouse at %v, database %q", cfg.Addr, cfg.Database)
	var ex *ch.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case codeUnknownDatabase:
			return fmt.Errorf("%s: the database does not exist (create it with CREATE DATABASE %s, or fix the store URL): %w", where, cfg.Database, err)
		case codeUnknownUser, codeWrongPassword, codeRequiredPassword, codeAuthFailed, codeIPNotAllowed:
			return fmt.Errorf("%s: user %q cannot log in (check user and password in the store URL): %w", where, cfg.Username, err)
		case codeReadonly, codeAccessDenied:
			return fmt.Errorf("%s: user %q lacks the privileges needed (CREATE TABLE, CREATE VIEW, ALTER, INSERT, SELECT on %s.*): %w", where, cfg.Username, cfg.Database, err)
		case codeUnknownTable:
			return fmt.Errorf("%s: a Vigil table is missing (run `vigil store migrate`): %w", where, err)
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	var op *net.OpError
	if errors.As(err, &op) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: cannot reach the server (is it running, and is the host:port right?): %w", where, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}
