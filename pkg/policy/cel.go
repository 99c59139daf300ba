package policy

import (
	"fmt"

	"cel.dev/cel-go/cel"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// celEnv declares the variables a rule's `when` expression sees. Maps of dynamic values keep
// the schema open: a field the request lacks is an empty string or list, never an error.
var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("statement", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("principal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("environment", cel.StringType),
		cel.Variable("database", cel.StringType),
		cel.Variable("source", cel.StringType),
		cel.Variable("protocol", cel.StringType),
	)
	if err != nil {
		panic(fmt.Sprintf("policy: CEL environment: %v", err))
	}
	return env
}()

// compileCEL compiles a boolean condition once, at load.
func compileCEL(expr string) (cel.Program, error) {
	ast, iss := celEnv.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("CEL condition %q: %w", expr, iss.Err())
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("CEL condition %q yields %s, not bool", expr, ast.OutputType())
	}
	prg, err := celEnv.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("CEL condition %q: %w", expr, err)
	}
	return prg, nil
}

func strs(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// cel evaluates a rule's condition. An evaluation error (a type mismatch at run time)
// counts as a match for block/approval/alert rules and as no match for allow/mask rules:
// a broken condition must not open a hole.
func (c *evalCtx) cel(r *rule, st *sqlparse.Stmt) bool {
	req := c.req
	p := map[string]any{
		"db_user":         req.DBUser,
		"application":     req.Application,
		"client_addr":     req.ClientAddr,
		"groups":          strs(c.identityGroups()),
		"email":           "",
		"subject":         "",
		"uid":             int64(-1),
		"exe":             "",
		"comm":            "",
		"container_id":    "",
		"pod":             "",
		"namespace":       "",
		"service_account": "",
	}
	if req.Identity != nil {
		p["email"], p["subject"] = req.Identity.Email, req.Identity.Subject
	}
	if pr := req.Process; pr != nil {
		if pr.UID != nil {
			p["uid"] = int64(*pr.UID)
		}
		p["exe"], p["comm"], p["container_id"] = pr.Exe, pr.Comm, pr.ContainerID
		p["pod"], p["namespace"], p["service_account"] = pr.Pod, pr.Namespace, pr.ServiceAccount
	}
	tables := append(append([]string{}, st.Reads...), st.Writes...)
	s := map[string]any{
		"kind":               st.Kind,
		"command":            st.Command,
		"text":               st.Text,
		"tables":             tables,
		"reads":              strs(st.Reads),
		"writes":             strs(st.Writes),
		"columns":            strs(st.Columns),
		"functions":          strs(st.Functions),
		"variables":          strs(st.Variables),
		"flags":              strs(st.Flags.Names()),
		"no_effective_where": st.Flags.Has(sqlparse.FlagNoEffectiveWhere),
		"fingerprint":        c.info.Fingerprint,
		"parsed":             c.info.Parsed,
	}
	out, _, err := r.prg.Eval(map[string]any{
		"statement":   s,
		"principal":   p,
		"environment": c.environment(),
		"database":    req.Database,
		"source":      req.Source,
		"protocol":    req.Protocol,
	})
	if err != nil {
		return r.Action != ActionAllow && r.Action != ActionMask
	}
	b, ok := out.Value().(bool)
	if !ok {
		return r.Action != ActionAllow && r.Action != ActionMask
	}
	return b
}
