// Package testpg starts throwaway PostgreSQL servers from Debian's binaries for tests: a temp
// data directory owned by the postgres user, a free loopback port, a Unix socket in the temp
// dir, TLS with a generated certificate, fsync off. The server is stopped when the test ends,
// and dies with the test process if that ends first without stopping it (killed).
package testpg

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
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

	"github.com/vigil-db/vigil/internal/testproc"
)

// BinDir is where Debian installs the PostgreSQL 15 server binaries.
const BinDir = "/usr/lib/postgresql/15/bin"

// Server is a running throwaway PostgreSQL.
type Server struct {
	Dir       string // data directory
	SocketDir string // directory holding .s.PGSQL.<port>
	Host      string
	Port      int
	// Password is the password of the "vigil_scram" role (SCRAM auth over TCP) and of the
	// "vigil_md5" role (md5 auth); every other role authenticates with trust.
	Password string

	proc *testproc.Proc // the postmaster
}

// Options tune the server.
type Options struct {
	// Config lines appended to postgresql.conf.
	Config []string
	// HBA lines appended to pg_hba.conf (clients from other addresses than loopback).
	HBA []string
}

// Start starts a server and registers its shutdown with t.Cleanup. It fails the test when
// PostgreSQL cannot be started (it does not skip: a missing server is a broken setup).
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	s, err := StartServer(opts...)
	if err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartServer starts a server outside of a test (benchmarks, the demo). Call Stop.
func StartServer(opts ...Options) (*Server, error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("looking up the postgres user (is postgresql installed?): %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	root, err := os.MkdirTemp("", "vigil-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: filepath.Join(root, "data"), SocketDir: root, Host: "127.0.0.1", Password: "s3cret-Pa55"}
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(root, uid, gid); err != nil {
		return nil, err
	}
	if s.Port, err = FreePort(); err != nil {
		return nil, err
	}
	if out, err := asPostgres(filepath.Join(BinDir, "initdb"), "-D", s.Dir, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if err := WriteCert(s.Dir, uid, gid); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	conf := []string{
		fmt.Sprintf("port = %d", s.Port),
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("unix_socket_directories = '%s'", s.SocketDir),
		"fsync = off", "synchronous_commit = off", "full_page_writes = off",
		"max_connections = 200", "shared_buffers = 64MB",
		"ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'",
		"password_encryption = 'scram-sha-256'",
	}
	for _, o := range opts {
		conf = append(conf, o.Config...)
	}
	if err := appendFile(filepath.Join(s.Dir, "postgresql.conf"), strings.Join(conf, "\n")+"\n"); err != nil {
		return nil, err
	}
	hba := "local all all trust\nhost all vigil_scram 127.0.0.1/32 scram-sha-256\nhost all vigil_md5 127.0.0.1/32 md5\n" +
		"host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	for _, o := range opts {
		for _, l := range o.HBA {
			hba += l + "\n"
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	_ = os.Chown(filepath.Join(s.Dir, "pg_hba.conf"), uid, gid)
	if err := s.start(uint32(uid), uint32(gid)); err != nil {
		log, _ := os.ReadFile(filepath.Join(root, "server.log"))
		os.RemoveAll(root)
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	if _, err := s.Psql("postgres", "CREATE ROLE vigil_scram LOGIN SUPERUSER PASSWORD '"+s.Password+"'; "+
		"SET password_encryption = 'md5'; CREATE ROLE vigil_md5 LOGIN SUPERUSER PASSWORD '"+s.Password+"'"); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// start runs the postmaster as the postgres user and waits until it accepts connections.
// Not pg_ctl: it starts the postmaster as a daemon, out of reach of the parent-death signal
// that ends the server with the test process (testproc). The postmaster's own children
// exit when it dies.
func (s *Server) start(uid, gid uint32) error {
	logf, err := os.Create(filepath.Join(s.SocketDir, "server.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(BinDir, "postgres"), "-D", s.Dir)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a test's SIGINT must not reach the server before Stop does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if s.proc, err = testproc.Start(cmd); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !s.ready() {
		select {
		case <-s.proc.Done():
			return fmt.Errorf("postgres exited during start-up: %v", s.proc.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return errors.New("postgres not ready within 30s")
		}
	}
	return nil
}

// ready says whether the postmaster reports itself ready in postmaster.pid (its pid on the
// first line, the status on the eighth), as pg_ctl -w checks.
func (s *Server) ready() bool {
	b, err := os.ReadFile(filepath.Join(s.Dir, "postmaster.pid"))
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return len(lines) >= 8 && lines[0] == strconv.Itoa(s.proc.Pid) && strings.TrimSpace(lines[7]) == "ready"
}

// Stop stops the server at once (an immediate shutdown, as pg_ctl -m immediate) and
// removes its files.
func (s *Server) Stop() {
	if s.proc != nil {
		_ = s.proc.Signal(syscall.SIGQUIT)
		select {
		case <-s.proc.Done():
		case <-time.After(10 * time.Second):
			_ = s.proc.Signal(syscall.SIGKILL)
			<-s.proc.Done()
		}
	}
	_ = os.RemoveAll(s.SocketDir)
}

// DSN is a libpq/pgx URL for user and database over TCP (sslmode=disable).
func (s *Server) DSN(user, db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", user, s.Host, s.Port, db)
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// SocketPath is the Unix socket the server listens on.
func (s *Server) SocketPath() string {
	return filepath.Join(s.SocketDir, fmt.Sprintf(".s.PGSQL.%d", s.Port))
}

// Psql runs sql with psql over the Unix socket as the postgres superuser and returns its
// unaligned, tuples-only output.
func (s *Server) Psql(db, sql string) (string, error) {
	cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", s.SocketDir, "-p", strconv.Itoa(s.Port), "-U", "postgres", "-d", db, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func asPostgres(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	cmd.Dir = "/"
	return cmd.CombinedOutput()
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteCert writes a self-signed server certificate for 127.0.0.1/localhost into dir as
// server.crt and server.key, owned by uid:gid (the server's user, which must read them).
func WriteCert(dir string, uid, gid int) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}
