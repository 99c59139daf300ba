package enforce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// COPY ... TO STDOUT for a masked statement. CopyOutResponse says neither where the columns
// come from nor the text options, so the proxy reads them from the statement: its source (a
// table with an optional column list, or a query) is described on the catalog connection to
// learn column origins, and its options (format, delimiter, null string, quote, header) say
// how to split rows. Whatever cannot be learned fails closed: every field leaves as NULL.

type copyFormat uint8

const (
	copyText copyFormat = iota
	copyCSV
	copyBinary
)

type copyPlan struct {
	format     copyFormat
	delim      byte
	null       string
	quote      byte
	escape     byte
	skipHeader bool // CSV HEADER: the first row is column names
	plan       *rowPlan
	h          *item
	sawHeader  bool // binary: the signature has been passed
	buf        []byte
}

// copyPlanFor prepares the masking of a COPY TO STDOUT answering h. body is the
// CopyOutResponse.
func (ss *session) copyPlanFor(h *item, body []byte) *copyPlan {
	cp := &copyPlan{delim: '\t', null: `\N`, quote: '"', escape: '"', plan: nullPlan, h: h}
	if len(body) >= 1 && body[0] == 1 {
		cp.format = copyBinary
	}
	src, err := cp.parse(h.st.text)
	if err != nil {
		ss.srv.log.Warn("COPY TO STDOUT for a masked session: cannot read the statement; every field leaves as NULL",
			"session_id", ss.id, "err", err)
		return cp
	}
	fields, err := ss.srv.cat.describe(ss, src)
	if err != nil {
		ss.srv.log.Warn("COPY TO STDOUT for a masked session: cannot describe its source; every field leaves as NULL",
			"session_id", ss.id, "err", err)
		return cp
	}
	for i := range fields {
		fields[i].binary = cp.format == copyBinary
	}
	cp.plan = ss.plan(fields, h)
	if cp.plan != nil {
		h.cols.addPlan(cp.plan)
	}
	return cp
}

// parse reads the COPY statement's options and returns a query with the same columns.
func (cp *copyPlan) parse(sql string) (string, error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return "", err
	}
	if len(tree.Stmts) != 1 {
		return "", errors.New("COPY in a multi-statement message")
	}
	c := tree.Stmts[0].Stmt.GetCopyStmt()
	if c == nil {
		return "", errors.New("not a COPY statement")
	}
	for _, o := range c.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		arg := ""
		if d.Arg != nil {
			if s := d.Arg.GetString_(); s != nil {
				arg = s.Sval
			}
		}
		switch d.Defname {
		case "format":
			switch strings.ToLower(arg) {
			case "csv":
				cp.format, cp.delim, cp.null = copyCSV, ',', ""
			case "binary":
				cp.format = copyBinary
			}
		case "header":
			cp.skipHeader = d.Arg == nil || (d.Arg.GetBoolean() != nil && d.Arg.GetBoolean().Boolval) ||
				(arg != "" && !strings.EqualFold(arg, "false") && !strings.EqualFold(arg, "off") && arg != "0")
		}
	}
	for _, o := range c.Options {
		d := o.GetDefElem()
		if d == nil || d.Arg == nil || d.Arg.GetString_() == nil {
			continue
		}
		arg := d.Arg.GetString_().Sval
		switch d.Defname {
		case "delimiter":
			if len(arg) != 1 {
				return "", fmt.Errorf("COPY delimiter %q", arg)
			}
			cp.delim = arg[0]
		case "null":
			cp.null = arg
		case "quote":
			if len(arg) == 1 {
				cp.quote = arg[0]
			}
		case "escape":
			if len(arg) == 1 {
				cp.escape = arg[0]
			}
		}
	}
	if c.Query != nil {
		// Deparse refuses a tree without the parser's version.
		out, err := pg_query.Deparse(&pg_query.ParseResult{Version: tree.Version, Stmts: []*pg_query.RawStmt{{Stmt: c.Query}}})
		if err != nil {
			return "", fmt.Errorf("deparsing the COPY query: %w", err)
		}
		return out, nil
	}
	if c.Relation == nil {
		return "", errors.New("COPY without a source")
	}
	cols := "*"
	if len(c.Attlist) > 0 {
		var names []string
		for _, a := range c.Attlist {
			if s := a.GetString_(); s != nil {
				names = append(names, quoteIdent(s.Sval))
			}
		}
		cols = strings.Join(names, ", ")
	}
	rel := quoteIdent(c.Relation.Relname)
	if c.Relation.Schemaname != "" {
		rel = quoteIdent(c.Relation.Schemaname) + "." + rel
	}
	return "SELECT " + cols + " FROM " + rel, nil
}

// mask rewrites one CopyData message.
func (cp *copyPlan) mask(ss *session, msg []byte) []byte {
	data := msg[5:]
	out, sp := beginMsg(cp.buf[:0], 'd')
	switch {
	case cp.plan == nil:
		out = append(out, data...)
	case cp.format == copyBinary:
		out = cp.maskBinary(ss, out, data)
	case cp.skipHeader:
		cp.skipHeader = false
		out = append(out, data...)
	default:
		out = cp.maskText(ss, out, data)
	}
	cp.buf = finishMsg(out, sp)
	return cp.buf
}

// maskText masks one text or CSV row (PostgreSQL sends one row per CopyData).
func (cp *copyPlan) maskText(ss *session, out, row []byte) []byte {
	eol := len(row)
	for eol > 0 && (row[eol-1] == '\n' || row[eol-1] == '\r') {
		eol--
	}
	fields := cp.split(row[:eol])
	masker := ss.srv.policy.Masker()
	for i, f := range fields {
		if i > 0 {
			out = append(out, cp.delim)
		}
		raw := row[f.start:f.end]
		if !cp.plan.nullAll && i >= len(cp.plan.cols) {
			out = cp.appendNull(out)
			continue
		}
		if cp.format == copyText && string(raw) == cp.null || cp.format == copyCSV && f.end == f.start && !f.quoted {
			out = append(out, raw...)
			continue
		}
		if cp.plan.nullAll {
			out = cp.appendNull(out)
			ss.srv.m.maskedValues.Inc()
			continue
		}
		c := &cp.plan.cols[i]
		v := raw
		if f.quoted {
			v = cp.unquote(raw)
		}
		var masked []byte
		null := false
		switch c.action {
		case colKeep:
			out = append(out, raw...)
			continue
		case colMask:
			masked = masker.Apply(c.strat, v)
			null = masked == nil || !textType(c.oid)
		case colDetect:
			mv, isNull, found := detectValue(masker, c, v)
			if !found {
				out = append(out, raw...)
				continue
			}
			cp.h.cols.pii = addOnce(cp.h.cols.pii, c.name)
			cp.h.cols.masked = addOnce(cp.h.cols.masked, c.name)
			masked, null = mv, isNull
		}
		ss.srv.m.maskedValues.Inc()
		if null {
			out = cp.appendNull(out)
		} else {
			out = cp.appendField(out, masked, f.quoted)
		}
	}
	return append(out, row[eol:]...)
}

type copyField struct {
	start, end int
	quoted     bool
}

// split splits a row into fields: for text, on the delimiter outside backslash escapes; for
// CSV, on the delimiter outside quotes.
func (cp *copyPlan) split(row []byte) []copyField {
	var out []copyField
	start, inQuote, quoted := 0, false, false
	for i := 0; i < len(row); i++ {
		c := row[i]
		switch {
		case cp.format == copyText && c == '\\':
			i++
		case cp.format == copyCSV && inQuote && c == cp.escape && i+1 < len(row) && row[i+1] == cp.quote && cp.escape != cp.quote:
			i++
		case cp.format == copyCSV && c == cp.quote:
			if inQuote && cp.escape == cp.quote && i+1 < len(row) && row[i+1] == cp.quote {
				i++
				continue
			}
			inQuote = !inQuote
			quoted = true
		case c == cp.delim && !inQuote:
			out = append(out, copyField{start, i, quoted})
			start, quoted = i+1, false
		}
	}
	return append(out, copyField{start, len(row), quoted})
}

func (cp *copyPlan) unquote(raw []byte) []byte {
	if len(raw) >= 2 && raw[0] == cp.quote && raw[len(raw)-1] == cp.quote {
		raw = raw[1 : len(raw)-1]
	}
	return bytes.ReplaceAll(raw, []byte{cp.escape, cp.quote}, []byte{cp.quote})
}

func (cp *copyPlan) appendNull(out []byte) []byte {
	return append(out, cp.null...)
}

// appendField appends a masked value, quoted for CSV when it needs to be or when the value
// it replaces was (FORCE_QUOTE).
func (cp *copyPlan) appendField(out, v []byte, quoted bool) []byte {
	if cp.format == copyCSV {
		if quoted || bytes.IndexByte(v, cp.delim) >= 0 || bytes.IndexByte(v, cp.quote) >= 0 || bytes.ContainsAny(v, "\r\n") {
			out = append(out, cp.quote)
			for _, c := range v {
				if c == cp.quote || (c == cp.escape && cp.escape != cp.quote) {
					out = append(out, cp.escape)
				}
				out = append(out, c)
			}
			return append(out, cp.quote)
		}
		return append(out, v...)
	}
	for _, c := range v {
		switch c {
		case '\\', '\n', '\r', cp.delim:
			out = append(out, '\\')
		}
		out = append(out, c)
	}
	return out
}

var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

// maskBinary masks binary COPY data: the signature and header (first message only), then
// tuples of int16 field count and int32-length fields; a count of -1 ends the data.
func (cp *copyPlan) maskBinary(ss *session, out, data []byte) []byte {
	p := 0
	if !cp.sawHeader {
		if len(data) < len(copySignature)+8 || !bytes.Equal(data[:len(copySignature)], copySignature) {
			return out // not binary COPY as PostgreSQL writes it: send nothing of it
		}
		ext := int(binary.BigEndian.Uint32(data[len(copySignature)+4:]))
		p = len(copySignature) + 8 + ext
		if p > len(data) {
			return out
		}
		out = append(out, data[:p]...)
		cp.sawHeader = true
	}
	masker := ss.srv.policy.Masker()
	for p+2 <= len(data) {
		n := int(int16(binary.BigEndian.Uint16(data[p:])))
		out = append(out, data[p:p+2]...)
		p += 2
		if n < 0 {
			break
		}
		for i := 0; i < n; i++ {
			if p+4 > len(data) {
				return out
			}
			l := int32(binary.BigEndian.Uint32(data[p:]))
			p += 4
			if l < 0 {
				out = appendNull(out)
				continue
			}
			if int(l) > len(data)-p {
				return out
			}
			v := data[p : p+int(l)]
			p += int(l)
			if cp.plan.nullAll || i >= len(cp.plan.cols) {
				out = appendNull(out)
				ss.srv.m.maskedValues.Inc()
				continue
			}
			out = ss.appendField(out, &cp.plan.cols[i], v, cp.h, masker)
		}
	}
	return out
}

// describe learns the result columns of sql on the catalog connection without running it.
func (c *catalog) describe(ss *session, sql string) ([]field, error) {
	d := c.db(ss.upstream, ss.database)
	ctx, cancel := context.WithTimeout(ss.context(), catalogTimeout)
	defer cancel()
	conn, err := c.acquire(ctx, ss, d)
	if err != nil {
		return nil, err
	}
	sd, err := conn.Prepare(ctx, "", sql, nil)
	var pgErr *pgconn.PgError
	if err == nil || errors.As(err, &pgErr) {
		d.release(conn)
	} else {
		d.discard(conn)
	}
	if err != nil {
		return nil, fmt.Errorf("describing %q: %w", sql, err)
	}
	out := make([]field, len(sd.Fields))
	for i, f := range sd.Fields {
		out[i] = field{name: f.Name, table: f.TableOID, att: f.TableAttributeNumber, oid: f.DataTypeOID}
	}
	return out, nil
}
