package enforce

import (
	"bytes"
	"encoding/json"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// Channels other than result rows by which a value can reach a masked principal: LISTEN
// payloads (NotificationResponse), session parameters the server reports (ParameterStatus),
// and FunctionCall results. What passes through them is checked with the value detectors;
// statements that would put a table's values into them (set_config or pg_notify with a
// value computed from anything but constants and parameters) are refused, as are
// FunctionCalls of functions that could return table data: a channel the proxy cannot mask
// is closed, not passed.

// maskNotification masks the payload of a NotificationResponse for a masked session.
func (ss *session) maskNotification(msg []byte) ([]byte, error) {
	body := msg[5:]
	if len(body) < 4 {
		return nil, &sessionError{reason: reasonServerProtocol, err: errMalformedNotification}
	}
	channel, rest, ok := cstring(body[4:])
	payload, rest2, ok2 := cstring(rest)
	if !ok || !ok2 || len(rest2) != 0 {
		return nil, &sessionError{reason: reasonServerProtocol, err: errMalformedNotification}
	}
	masked, found := ss.maskText(payload)
	if !found {
		return msg, nil
	}
	out, sp := beginMsg(ss.rowBuf[:0], 'A')
	out = append(out, body[:4]...)
	out = append(append(out, channel...), 0)
	out = append(append(out, masked...), 0)
	ss.rowBuf = finishMsg(out, sp)
	return ss.rowBuf, nil
}

var errMalformedNotification = protoErr("malformed NotificationResponse")

// maskParameter masks the value of a ParameterStatus for a masked session (a value set
// with SET or set_config from a literal the detectors recognize).
func (ss *session) maskParameter(msg []byte) ([]byte, error) {
	body := msg[5:]
	name, rest, ok := cstring(body)
	value, rest2, ok2 := cstring(rest)
	if !ok || !ok2 || len(rest2) != 0 {
		return nil, &sessionError{reason: reasonServerProtocol, err: protoErr("malformed ParameterStatus")}
	}
	masked, found := ss.maskText(value)
	if !found {
		return msg, nil
	}
	out, sp := beginMsg(ss.rowBuf[:0], 'S')
	out = append(append(out, name...), 0)
	out = append(append(out, masked...), 0)
	ss.rowBuf = finishMsg(out, sp)
	return ss.rowBuf, nil
}

// maskText masks what the detectors recognize in a text that cannot be NULL: under the null
// strategy the whole text becomes the placeholder.
func (ss *session) maskText(v []byte) ([]byte, bool) {
	masked, found := maskEmbedded(ss.srv.policy.Masker(), ss.srv.policy.Strategy(), v)
	if !found {
		return nil, false
	}
	ss.srv.m.maskedValues.Inc()
	if masked == nil {
		masked = []byte(mask.Placeholder)
	}
	return bytes.ReplaceAll(masked, []byte{0}, nil), true
}

// channelFunctions are the functions whose value argument goes out by another channel
// than the result: set_config's to ParameterStatus (and SHOW), pg_notify's to every
// listener. The index is the argument's.
var channelFunctions = map[string]int{"set_config": 1, "pg_notify": 1}

// channelRefusal refuses, for a masked statement, a call of a channel function whose value
// is computed from anything but constants and parameters: it could carry a table's values
// past the masking.
func channelRefusal(sql string) (errorFields, bool) {
	if !containsFold(sql, "set_config") && !containsFold(sql, "pg_notify") {
		return errorFields{}, false // the common case: no parse
	}
	tree, err := pg_query.ParseToJSON(sql)
	if err != nil {
		return errorFields{}, false // the server will not run it either
	}
	var doc any
	if err := json.Unmarshal([]byte(tree), &doc); err != nil {
		return errorFields{}, false
	}
	fn := ""
	walkNodes(doc, func(typ string, n map[string]any) bool {
		if typ != "FuncCall" {
			return true
		}
		name := funcName(n)
		i, ok := channelFunctions[name]
		if !ok {
			return true
		}
		args, _ := n["args"].([]any)
		if i < len(args) && !constantExpr(args[i]) {
			fn = name
			return false
		}
		return true
	})
	if fn == "" {
		return errorFields{}, false
	}
	return errorFields{"42501",
		"Vigil: " + fn + " with a value computed from the database is refused for a session whose results are masked",
		"Pass the value as a literal or a parameter: it would leave by a channel the proxy cannot mask."}, true
}

// walkNodes calls f for every parse tree node (a JSON object keyed by its node type) under
// x, depth first; f returning false stops the walk.
func walkNodes(x any, f func(typ string, n map[string]any) bool) bool {
	switch t := x.(type) {
	case map[string]any:
		for k, v := range t {
			if n, ok := v.(map[string]any); ok && isNodeType(k) && !f(k, n) {
				return false
			}
			if !walkNodes(v, f) {
				return false
			}
		}
	case []any:
		for _, v := range t {
			if !walkNodes(v, f) {
				return false
			}
		}
	}
	return true
}

// isNodeType tells a node type key ("FuncCall", "A_Const") from a field name ("args").
func isNodeType(k string) bool { return k != "" && k[0] >= 'A' && k[0] <= 'Z' }

// funcName is a FuncCall's function name without its schema.
func funcName(n map[string]any) string {
	parts, _ := n["funcname"].([]any)
	if len(parts) == 0 {
		return ""
	}
	last, _ := parts[len(parts)-1].(map[string]any)
	s, _ := last["String"].(map[string]any)
	name, _ := s["sval"].(string)
	return strings.ToLower(name)
}

// constantNodes are the node types a constant expression is made of; constantFuncs the
// functions it may call (none reads a table).
var (
	constantNodes = map[string]bool{"A_Const": true, "ParamRef": true, "TypeCast": true, "TypeName": true,
		"A_Expr": true, "BoolExpr": true, "CoalesceExpr": true, "NullTest": true, "String": true,
		"Integer": true, "Float": true, "Boolean": true, "BitString": true, "FuncCall": true}
	constantFuncs = map[string]bool{"concat": true, "concat_ws": true, "format": true, "lower": true, "upper": true,
		"btrim": true, "ltrim": true, "rtrim": true, "replace": true, "current_setting": true, "coalesce": true,
		"now": true, "to_char": true}
)

// constantExpr reports an expression of constants, parameters, operators, casts and
// constantFuncs only: no column, no subquery, no other function.
func constantExpr(x any) bool {
	ok := true
	walkNodes(x, func(typ string, n map[string]any) bool {
		if !constantNodes[typ] || typ == "FuncCall" && !constantFuncs[funcName(n)] {
			ok = false
		}
		return ok
	})
	return ok
}

// functionCallAllowed lists the functions a masked session may call with FunctionCall: the
// large-object calls libpq and JDBC make that return no stored data, and functions of their
// arguments alone. A FunctionCall's result is one value the proxy cannot relate to any
// column, so a function that can read a table (table_to_xml, query_to_xml, loread, any
// user function) is refused.
var functionCallAllowed = map[string]bool{
	"pg_catalog.lo_open": true, "pg_catalog.lo_close": true, "pg_catalog.lo_creat": true,
	"pg_catalog.lo_create": true, "pg_catalog.lo_lseek": true, "pg_catalog.lo_lseek64": true,
	"pg_catalog.lo_tell": true, "pg_catalog.lo_tell64": true, "pg_catalog.lo_truncate": true,
	"pg_catalog.lo_truncate64": true, "pg_catalog.lo_unlink": true, "pg_catalog.lowrite": true,
	"pg_catalog.md5": true, "pg_catalog.pg_backend_pid": true, "pg_catalog.version": true,
}

// functionCallRefusal refuses a FunctionCall of name (schema-qualified, quoted as the
// catalog names it) judged as st, when st's results are masked and the function is not on
// the allow-list.
func functionCallRefusal(st *stmt, name string) *stmt {
	if !st.mask || st.blocked || functionCallAllowed[name] {
		return st
	}
	r := *st
	r.blocked = true
	r.dec.Action, r.dec.Rule = policy.ActionBlock, "proxy:function_call_masked"
	r.dec.Message = "FunctionCall of " + name + " for a session whose results are masked"
	r.refusal = errorFields{"42501",
		"Vigil: FunctionCall of " + name + " is refused for a session whose results are masked",
		"Call the function in a SELECT: its result is then masked like any other."}
	return &r
}

// containsFold reports whether sub (lower-case ASCII) occurs in s in any case, without the
// copy of s that strings.ToLower would make (a statement may be 64 MiB).
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i]|0x20 == sub[0] && strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
