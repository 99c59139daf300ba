package main

import (
	"os"
	"testing"
)

// asVigilEnv set to 1 makes the test binary `vigil` with the arguments it was given: a
// test can then run the agent as a process of its own (to kill it with SIGKILL), or the
// CLI under another uid (an approver who is not the requester).
const asVigilEnv = "VIGIL_TEST_AS_VIGIL"

func TestMain(m *testing.M) {
	if os.Getenv(asVigilEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
