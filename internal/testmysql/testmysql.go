// Package testmysql starts throwaway MariaDB servers from Debian's binaries for tests: a temp
// data directory owned by the mysql user, a free loopback port, a Unix socket in the temp
// dir, TLS with a generated certificate, durability off. The server is stopped when the test
// ends, and dies with the test process if that ends first without stopping it (testproc).
package testmysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testproc"
)

// Server is the path of Debian's MariaDB server binary (10.11 in bookworm).
const Server = "/usr/sbin/mariadbd"

// Instance is a running throwaway MariaDB.
type Instance struct {
	Dir    string // root of its files: data/, the socket, the certificate, the log
	Host   string
	Port   int
	Socket string // the Unix socket's path
	// Password is the password of the "vigil" user (mysql_native_password, every host,
	// all privileges); root authenticates without a password.
	Password string

	proc *testproc.Proc
}

// Options tune the server.
type Options struct {
	// Config lines appended to the [mariadbd] section of its option file.
	Config []string
}

// Start starts a server and registers its shutdown with t.Cleanup. It fails the test when
// MariaDB cannot be started (it does not skip: a missing server is a broken setup).
func Start(t testing.TB, opts ...Options) *Instance {
	t.Helper()
	s, err := StartServer(opts...)
	if err != nil {
		t.Fatalf("starting MariaDB: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartServer starts a server outside of a test (benchmarks, the demo). Call Stop.
func StartServer(opts ...Options) (*Instance, error) {
	u, err := user.Lookup("mysql")
	if err != nil {
		return nil, fmt.Errorf("looking up the mysql user (is mariadb-server installed?): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	root, err := os.MkdirTemp("", "vigil-mysql-")
	if err != nil {
		return nil, err
	}
	s := &Instance{Dir: root, Host: "127.0.0.1", Socket: filepath.Join(root, "mysqld.sock"), Password: "s3cret-Pa55"}
	fail := func(err error) (*Instance, error) {
		s.Stop()
		return nil, err
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Chown(root, uid, gid); err != nil {
		return fail(err)
	}
	if s.Port, err = testpg.FreePort(); err != nil {
		return fail(err)
	}
	if err := testpg.WriteCert(root, uid, gid); err != nil {
		return fail(err)
	}
	conf := []string{
		"[mariadbd]",
		"datadir = " + filepath.Join(root, "data"),
		"socket = " + s.Socket,
		"port = " + strconv.Itoa(s.Port),
		"bind-address = 127.0.0.1",
		"pid-file = " + filepath.Join(root, "mysqld.pid"),
		"log-error = " + filepath.Join(root, "server.log"),
		"ssl-cert = " + filepath.Join(root, "server.crt"),
		"ssl-key = " + filepath.Join(root, "server.key"),
		"skip-name-resolve", "skip-log-bin",
		"innodb_flush_log_at_trx_commit = 0", "innodb_doublewrite = 0", "sync_binlog = 0",
		"innodb_buffer_pool_size = 64M", "innodb_log_file_size = 16M",
		"max_connections = 200", "character-set-server = utf8mb4",
		"local_infile = 1",
	}
	for _, o := range opts {
		conf = append(conf, o.Config...)
	}
	cnf := filepath.Join(root, "my.cnf")
	if err := os.WriteFile(cnf, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return fail(err)
	}
	install := exec.Command("mariadb-install-db", "--defaults-file="+cnf, "--user=mysql",
		"--auth-root-authentication-method=normal", "--skip-test-db")
	install.Dir = "/"
	if out, err := install.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("mariadb-install-db: %v: %s", err, out))
	}
	if err := s.start(cnf, uint32(uid), uint32(gid)); err != nil {
		log, _ := os.ReadFile(filepath.Join(root, "server.log"))
		return fail(fmt.Errorf("%w\n%s", err, log))
	}
	if _, err := s.Exec("CREATE USER vigil@'%' IDENTIFIED BY '" + s.Password + "'; " +
		"GRANT ALL ON *.* TO vigil@'%' WITH GRANT OPTION; CREATE DATABASE vigil"); err != nil {
		return fail(err)
	}
	return s, nil
}

// start runs mariadbd as the mysql user (not mysqld_safe, which forks it off out of reach
// of the parent-death signal) and waits until it answers on its socket.
func (s *Instance) start(cnf string, uid, gid uint32) error {
	cmd := exec.Command(Server, "--defaults-file="+cnf)
	cmd.Dir = "/"
	// Own process group: a test's SIGINT must not reach the server before Stop does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var err error
	if s.proc, err = testproc.Start(cmd); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("unix", s.Socket, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.proc.Done():
			return fmt.Errorf("mariadbd exited during start-up: %v", s.proc.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("mariadbd not ready within 30s")
		}
	}
}

// Pid is the server process's pid.
func (s *Instance) Pid() int { return s.proc.Pid }

// Stop stops the server at once (SIGKILL: its data is thrown away) and removes its files.
func (s *Instance) Stop() {
	if s.proc != nil {
		_ = s.proc.Signal(syscall.SIGKILL)
		<-s.proc.Done()
		s.proc = nil
	}
	_ = os.RemoveAll(s.Dir)
}

// Addr is host:port.
func (s *Instance) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN is a go-sql-driver/mysql DSN for the vigil user and database db over TCP, without TLS.
// Extra parameters ("multiStatements=true", "tls=skip-verify") are appended.
func (s *Instance) DSN(db string, params ...string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = "vigil", s.Password
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", s.Addr(), db
	dsn := cfg.FormatDSN()
	for i, p := range params {
		if i == 0 && !strings.Contains(dsn, "?") {
			dsn += "?" + p
		} else {
			dsn += "&" + p
		}
	}
	return dsn
}

// Open opens a database handle on DSN(db, params...) and closes it when the test ends.
func (s *Instance) Open(t testing.TB, db string, params ...string) *sql.DB {
	t.Helper()
	h, err := sql.Open("mysql", s.DSN(db, params...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Exec runs sql (several statements allowed) with the mariadb client over the Unix socket
// as root, and returns its tab-separated, header-less output.
func (s *Instance) Exec(sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mariadb", "--no-defaults", "-S", s.Socket, "-u", "root", "-N", "-B", "-e", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mariadb %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}
