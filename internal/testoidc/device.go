package testoidc

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testproc"
)

// DeviceProvider is a running provider with the device authorization grant (RFC 8628), which
// Hydra v2.3 lacks: zitadel/oidc's example provider (tools/zitadel-op), in memory. It has one
// confidential client and one user, whose name is also the tokens' subject.
type DeviceProvider struct {
	Issuer             string // with the trailing slash the provider puts in tokens
	ClientID, Secret   string
	Username, Password string
	// Email is the user's address; the provider serves it from userinfo, not in ID tokens.
	Email string

	proc *testproc.Proc
}

// StartDevice starts a device-flow provider (VIGIL_ZITADEL_OP, or built from
// tools/zitadel-op) and registers its shutdown with t.Cleanup.
func StartDevice(t testing.TB) *DeviceProvider {
	t.Helper()
	bin, err := tool("VIGIL_ZITADEL_OP", "zitadel-op", ".", "")
	if err != nil {
		t.Fatalf("testoidc: %v", err)
	}
	p := &DeviceProvider{ClientID: "vigil-device", Secret: hex.EncodeToString(randBytes(16)),
		Username: "ana", Password: hex.EncodeToString(randBytes(8)), Email: "ana@example.com"}
	cmd := exec.Command(bin, "-client-id", p.ClientID, "-client-secret", p.Secret, "-user", p.Username, "-password", p.Password, "-email", p.Email)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errLog, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errLog.Close()
	cmd.Stderr = errLog
	if p.proc, err = testproc.Start(cmd); err != nil {
		t.Fatalf("testoidc: %v", err)
	}
	t.Cleanup(func() {
		_ = p.proc.Signal(os.Kill)
		<-p.proc.Done()
	})
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		l, _ := r.ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case p.Issuer = <-line:
	case <-time.After(30 * time.Second):
	}
	if !strings.HasPrefix(p.Issuer, "http://127.0.0.1:") {
		stderr, _ := os.ReadFile(errLog.Name())
		t.Fatalf("testoidc: the device-flow provider printed %q, want its issuer:\n%s", p.Issuer, stderr)
	}
	return p
}

// Approve plays the person on the other device: it opens verificationURL (the complete
// verification URI, carrying the user code), logs in as the provider's user and allows the
// device.
func (p *DeviceProvider) Approve(verificationURL string) error {
	u, err := url.Parse(verificationURL)
	if err != nil {
		return err
	}
	code := u.Query().Get("user_code")
	if code == "" {
		return fmt.Errorf("no user code in %s", verificationURL)
	}
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := hc.PostForm(p.Issuer+"device/login", url.Values{"user_code": {code}, "username": {p.Username}, "password": {p.Password}})
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "confirm?action=allowed") {
		return fmt.Errorf("device login: %s: %s", resp.Status, body)
	}
	resp, err = hc.Get(p.Issuer + "device/confirm?action=allowed")
	if err != nil {
		return err
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Device authorization allowed") {
		return errors.New("device confirmation: " + string(body))
	}
	return nil
}
