package clickhouse

import (
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigil-db/vigil/pkg/event"
)

// eventColumnsBuf holds one batch column by column: clickhouse-go appends whole slices to
// a column much faster than it appends rows value by value. It holds both time layouts
// (time is the full time; DateTime keeps its seconds, time_ns the rest) so that it can be
// built before the exporter knows which one the table has. The exporter reuses two of
// them (one being sent, one being built), so after the first batches building allocates
// nothing.
type eventColumnsBuf struct {
	time                                                             []time.Time
	timeNs                                                           []uint32
	typ, source, protocol, host, agentID, chainID                    []string
	seq                                                              []uint64
	dbUser, database, application, clientAddr, serverAddr, sessionID []string
	backendPID                                                       []int32
	tls, steered, hasProcess                                         []uint8
	steeredBy                                                        []string
	pPID                                                             []int32
	pUID                                                             []*int32
	pComm, pExe, pContainer, pPod, pNamespace, pSA, pImage, pCgroup  []string
	hasIdentity                                                      []uint8
	iIssuer, iSubject, iEmail                                        []string
	iGroups                                                          [][]string
	statement                                                        []string
	truncated                                                        []uint8
	params                                                           [][]string
	fingerprint, kind                                                []string
	tables                                                           [][]string
	rows, durationUS                                                 []int64
	errCode, errMessage, decision, rule                              []string
	pii, masked                                                      [][]string
	approvalID                                                       []string
	lost                                                             []uint64
	detail, signature, keyID, prevHash, hash                         []string
}

// reset empties every column and makes room for n rows. The old rows are cleared, not just
// cut off, so that a reused buffer does not keep the previous batch's events alive. A
// column missing here would keep its old rows, which the server rejects (columns of
// different sizes): every test insert would fail.
func (c *eventColumnsBuf) reset(n int) {
	c.time = reuse(c.time, n)
	c.timeNs = reuse(c.timeNs, n)
	c.typ, c.source, c.protocol, c.host, c.agentID, c.chainID = reuse(c.typ, n), reuse(c.source, n), reuse(c.protocol, n), reuse(c.host, n), reuse(c.agentID, n), reuse(c.chainID, n)
	c.seq = reuse(c.seq, n)
	c.dbUser, c.database, c.application, c.clientAddr, c.serverAddr, c.sessionID = reuse(c.dbUser, n), reuse(c.database, n), reuse(c.application, n), reuse(c.clientAddr, n), reuse(c.serverAddr, n), reuse(c.sessionID, n)
	c.backendPID = reuse(c.backendPID, n)
	c.tls, c.steered, c.hasProcess = reuse(c.tls, n), reuse(c.steered, n), reuse(c.hasProcess, n)
	c.steeredBy = reuse(c.steeredBy, n)
	c.pPID = reuse(c.pPID, n)
	c.pUID = reuse(c.pUID, n)
	c.pComm, c.pExe, c.pContainer, c.pPod, c.pNamespace, c.pSA = reuse(c.pComm, n), reuse(c.pExe, n), reuse(c.pContainer, n), reuse(c.pPod, n), reuse(c.pNamespace, n), reuse(c.pSA, n)
	c.pImage, c.pCgroup = reuse(c.pImage, n), reuse(c.pCgroup, n)
	c.hasIdentity = reuse(c.hasIdentity, n)
	c.iIssuer, c.iSubject, c.iEmail = reuse(c.iIssuer, n), reuse(c.iSubject, n), reuse(c.iEmail, n)
	c.iGroups = reuse(c.iGroups, n)
	c.statement = reuse(c.statement, n)
	c.truncated = reuse(c.truncated, n)
	c.params = reuse(c.params, n)
	c.fingerprint, c.kind = reuse(c.fingerprint, n), reuse(c.kind, n)
	c.tables = reuse(c.tables, n)
	c.rows, c.durationUS = reuse(c.rows, n), reuse(c.durationUS, n)
	c.errCode, c.errMessage, c.decision, c.rule = reuse(c.errCode, n), reuse(c.errMessage, n), reuse(c.decision, n), reuse(c.rule, n)
	c.pii, c.masked = reuse(c.pii, n), reuse(c.masked, n)
	c.approvalID = reuse(c.approvalID, n)
	c.lost = reuse(c.lost, n)
	c.detail, c.signature, c.keyID, c.prevHash, c.hash = reuse(c.detail, n), reuse(c.signature, n), reuse(c.keyID, n), reuse(c.prevHash, n), reuse(c.hash, n)
}

func reuse[T any](s []T, n int) []T {
	clear(s)
	return slices.Grow(s[:0], n)
}

func (c *eventColumnsBuf) len() int { return len(c.seq) }

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// strs keeps a nil slice nil-equivalent: ClickHouse has no NULL array, and the event's
// JSON omits empty arrays, so empty and nil are the same event.
func strs(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

func (c *eventColumnsBuf) add(e *event.Event) {
	t := e.Time.UTC()
	c.time = append(c.time, t)
	c.timeNs = append(c.timeNs, uint32(t.Nanosecond()))
	c.typ = append(c.typ, string(e.Type))
	c.source = append(c.source, e.Source)
	c.protocol = append(c.protocol, e.Protocol)
	c.host = append(c.host, e.Host)
	c.agentID = append(c.agentID, e.AgentID)
	c.chainID = append(c.chainID, e.ChainID)
	c.seq = append(c.seq, e.Seq)
	c.dbUser = append(c.dbUser, e.DBUser)
	c.database = append(c.database, e.Database)
	c.application = append(c.application, e.Application)
	c.clientAddr = append(c.clientAddr, e.ClientAddr)
	c.serverAddr = append(c.serverAddr, e.ServerAddr)
	c.sessionID = append(c.sessionID, e.SessionID)
	c.backendPID = append(c.backendPID, e.BackendPID)
	c.tls = append(c.tls, b2u(e.TLS))
	c.steered = append(c.steered, b2u(e.Steered))
	c.steeredBy = append(c.steeredBy, e.SteeredBy)
	p := e.Process
	c.hasProcess = append(c.hasProcess, b2u(p != nil))
	if p == nil {
		p = &event.Process{}
	}
	c.pPID = append(c.pPID, p.PID)
	c.pUID = append(c.pUID, p.UID)
	c.pComm = append(c.pComm, p.Comm)
	c.pExe = append(c.pExe, p.Exe)
	c.pContainer = append(c.pContainer, p.ContainerID)
	c.pPod = append(c.pPod, p.Pod)
	c.pNamespace = append(c.pNamespace, p.Namespace)
	c.pSA = append(c.pSA, p.ServiceAccount)
	c.pImage = append(c.pImage, p.Image)
	c.pCgroup = append(c.pCgroup, p.Cgroup)
	id := e.Identity
	c.hasIdentity = append(c.hasIdentity, b2u(id != nil))
	if id == nil {
		id = &event.Identity{}
	}
	c.iIssuer = append(c.iIssuer, id.Issuer)
	c.iSubject = append(c.iSubject, id.Subject)
	c.iEmail = append(c.iEmail, id.Email)
	c.iGroups = append(c.iGroups, strs(id.Groups))
	c.statement = append(c.statement, e.Statement)
	c.truncated = append(c.truncated, b2u(e.StatementTruncated))
	c.params = append(c.params, strs(e.Params))
	c.fingerprint = append(c.fingerprint, e.Fingerprint)
	c.kind = append(c.kind, e.Kind)
	c.tables = append(c.tables, strs(e.Tables))
	c.rows = append(c.rows, e.Rows)
	c.durationUS = append(c.durationUS, e.DurationUS)
	c.errCode = append(c.errCode, e.Error)
	c.errMessage = append(c.errMessage, e.ErrorMessage)
	c.decision = append(c.decision, e.Decision)
	c.rule = append(c.rule, e.Rule)
	c.pii = append(c.pii, strs(e.PIIColumns))
	c.masked = append(c.masked, strs(e.MaskedColumns))
	c.approvalID = append(c.approvalID, e.ApprovalID)
	c.lost = append(c.lost, e.Lost)
	c.detail = append(c.detail, e.Detail)
	c.signature = append(c.signature, e.Signature)
	c.keyID = append(c.keyID, e.KeyID)
	c.prevHash = append(c.prevHash, e.PrevHash)
	c.hash = append(c.hash, e.Hash)
}

// columns returns the column names and data in the same order as columnNames, for a table
// with the legacy (DateTime + time_ns) time columns or not.
func (c *eventColumnsBuf) columns(legacy bool) ([]string, []any) {
	data := []any{c.time}
	if legacy {
		data = append(data, c.timeNs)
	}
	data = append(data, c.typ, c.source, c.protocol, c.host, c.agentID, c.chainID, c.seq,
		c.dbUser, c.database, c.application, c.clientAddr, c.serverAddr, c.sessionID, c.backendPID, c.tls, c.steered, c.steeredBy,
		c.hasProcess, c.pPID, c.pUID, c.pComm, c.pExe, c.pContainer, c.pPod, c.pNamespace, c.pSA, c.pImage, c.pCgroup,
		c.hasIdentity, c.iIssuer, c.iSubject, c.iEmail, c.iGroups,
		c.statement, c.truncated, c.params, c.fingerprint, c.kind, c.tables,
		c.rows, c.durationUS, c.errCode, c.errMessage, c.decision, c.rule, c.pii, c.masked, c.approvalID,
		c.lost, c.detail, c.signature, c.keyID, c.prevHash, c.hash)
	names := columnNames(Features{DateTime64: !legacy})
	if len(names) != len(data) {
		panic(fmt.Sprintf("clickhouse: %d column names for %d columns", len(names), len(data)))
	}
	return names, data
}

// scanner reads rows selected with columnNames back into events.
type scanner struct {
	legacy bool
}

func newScanner(legacy bool) *scanner { return &scanner{legacy: legacy} }

func nilIfEmpty(v []string) []string {
	if len(v) == 0 {
		return nil
	}
	return v
}

func (s *scanner) scan(rows driver.Rows) (*event.Event, error) {
	var (
		e                                   event.Event
		typ                                 string
		timeNs                              uint32
		tls, steered, hasP, hasI, truncated uint8
		p                                   event.Process
		id                                  event.Identity
		groups, params, tables, pii, masked []string
	)
	dest := []any{&e.Time}
	if s.legacy {
		dest = append(dest, &timeNs)
	}
	dest = append(dest, &typ, &e.Source, &e.Protocol, &e.Host, &e.AgentID, &e.ChainID, &e.Seq,
		&e.DBUser, &e.Database, &e.Application, &e.ClientAddr, &e.ServerAddr, &e.SessionID, &e.BackendPID, &tls, &steered, &e.SteeredBy,
		&hasP, &p.PID, &p.UID, &p.Comm, &p.Exe, &p.ContainerID, &p.Pod, &p.Namespace, &p.ServiceAccount, &p.Image, &p.Cgroup,
		&hasI, &id.Issuer, &id.Subject, &id.Email, &groups,
		&e.Statement, &truncated, &params, &e.Fingerprint, &e.Kind, &tables,
		&e.Rows, &e.DurationUS, &e.Error, &e.ErrorMessage, &e.Decision, &e.Rule, &pii, &masked, &e.ApprovalID,
		&e.Lost, &e.Detail, &e.Signature, &e.KeyID, &e.PrevHash, &e.Hash)
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	e.Time = e.Time.UTC()
	if s.legacy {
		e.Time = e.Time.Add(time.Duration(timeNs))
	}
	e.Type = event.Type(typ)
	e.TLS = tls == 1
	e.Steered = steered == 1
	e.StatementTruncated = truncated == 1
	if hasP == 1 {
		e.Process = &p
	}
	if hasI == 1 {
		id.Groups = nilIfEmpty(groups)
		e.Identity = &id
	}
	e.Params = nilIfEmpty(params)
	e.Tables = nilIfEmpty(tables)
	e.PIIColumns = nilIfEmpty(pii)
	e.MaskedColumns = nilIfEmpty(masked)
	return &e, nil
}
