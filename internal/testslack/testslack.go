// Package testslack holds what tests that face slack-go's slacktest server share.
package testslack

import (
	"testing"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
)

// Messages returns the messages slacktest's server receives through chat.postMessage,
// which it relays to its websocket clients.
func Messages(t testing.TB, s *slacktest.Server) <-chan slack.Message {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(s.GetWSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan slack.Message, 8)
	go func() {
		for {
			var m slack.Message
			if err := c.ReadJSON(&m); err != nil {
				return
			}
			ch <- m
		}
	}()
	return ch
}
