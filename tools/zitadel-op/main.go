// Command zitadel-op serves zitadel/oidc's example OpenID provider on a loopback port, with
// one confidential client allowed the device authorization grant and one user, for Vigil's
// tests (internal/testoidc). It prints its issuer URL once it listens.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// oneUser is a user store of one user whose id is its user name: the example's device flow
// records the user name as the token's subject and later looks the subject up as an id.
type oneUser struct{ u *storage.User }

func (s oneUser) GetUserByID(id string) *storage.User         { return s.match(id) }
func (s oneUser) GetUserByUsername(name string) *storage.User { return s.match(name) }
func (s oneUser) ExampleClientID() string                     { return "" }

func (s oneUser) match(name string) *storage.User {
	if name == s.u.ID {
		return s.u
	}
	return nil
}

func main() {
	clientID := flag.String("client-id", "vigil-device", "the device client's id")
	secret := flag.String("client-secret", "", "the device client's secret")
	user := flag.String("user", "ana", "the user's name (and subject)")
	password := flag.String("password", "", "the user's password")
	email := flag.String("email", "ana@example.com", "the user's (verified) email")
	flag.Parse()
	if *secret == "" || *password == "" {
		log.Fatal("-client-secret and -password are required")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	issuer := fmt.Sprintf("http://%s/", l.Addr())
	storage.RegisterClients(storage.DeviceClient(*clientID, *secret))
	users := oneUser{&storage.User{ID: *user, Username: *user, Password: *password, Email: *email, EmailVerified: true}}
	router := exampleop.SetupServer(issuer, storage.NewStorage(users), nil, false)
	fmt.Println(issuer)
	log.Fatal(http.Serve(l, router))
}
