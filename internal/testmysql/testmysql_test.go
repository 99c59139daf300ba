package testmysql

import "testing"

func TestStart(t *testing.T) {
	s := Start(t)
	db := s.Open(t, "vigil", "tls=skip-verify")
	var cipher, version string
	if err := db.QueryRow("SELECT @@version, (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher')").Scan(&version, &cipher); err != nil {
		t.Fatal(err)
	}
	if cipher == "" {
		t.Fatalf("connection over TLS has no cipher (version %s)", version)
	}
	out, err := s.Exec("SELECT 1+1")
	if err != nil || out != "2" {
		t.Fatalf("Exec over the socket: %q, %v", out, err)
	}
}
