// Package decode is the seam between capture and its protocol decoders (postgres, mysql):
// what capture asks of a decoder for one connection, and the counters every decoder keeps,
// which capture sums into the agent's metrics without knowing the protocol.
package decode

import "time"

// Session decodes one connection, seen from outside in both directions, into events it
// hands to the sink it was created with. It is not safe for concurrent use.
type Session interface {
	// Feed decodes bytes seen in one direction, in order.
	Feed(fromClient bool, data []byte, ts time.Time)
	// Gap says that n bytes of one direction were not seen (lost by capture).
	Gap(fromClient bool, n int, ts time.Time)
	// Close ends the session: statements still waiting for their answer are emitted
	// with what is known.
	Close(ts time.Time)
	// Encrypted says the session switched to TLS: its wire bytes are not decodable (the
	// plaintext may arrive from uprobes on another session).
	Encrypted() bool
	// Stats are the session's counters so far.
	Stats() Stats
	// BackendPID is the server's id of the session where the protocol says it (a
	// PostgreSQL backend's pid, a MySQL connection id), or 0.
	BackendPID() int32
}

// Stats count what a Session decoded and what it could not. All are cumulative; Add sums
// sessions for the agent's metrics.
type Stats struct {
	Messages           uint64 // protocol messages decoded, both directions
	Statements         uint64 // statement events emitted
	DecodeErrors       uint64 // impossible headers and malformed bodies
	Resyncs            uint64 // times a lost message boundary was found again
	SkippedBytes       uint64 // bytes not decoded: capture gaps, and bytes scanned over to resync
	IgnoredBytes       uint64 // bytes not decoded because the stream is encrypted or over
	UnmatchedResponses uint64 // responses that answer no request seen (joined mid-stream, gaps)
	ResponsesNotSeen   uint64 // statements emitted without their response (gap, close)
	TruncatedMessages  uint64 // statements cut at MaxStatementBytes, parameters not kept
	PreparedEvicted    uint64 // prepared statements or portals forgotten for MaxPrepared(Bytes)
}

// Add adds b's counters to s.
func (s *Stats) Add(b Stats) {
	s.Messages += b.Messages
	s.Statements += b.Statements
	s.DecodeErrors += b.DecodeErrors
	s.Resyncs += b.Resyncs
	s.SkippedBytes += b.SkippedBytes
	s.IgnoredBytes += b.IgnoredBytes
	s.UnmatchedResponses += b.UnmatchedResponses
	s.ResponsesNotSeen += b.ResponsesNotSeen
	s.TruncatedMessages += b.TruncatedMessages
	s.PreparedEvicted += b.PreparedEvicted
}
