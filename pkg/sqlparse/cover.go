package sqlparse

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// An OR whose arms each restrict may still select every row together: id < 5 OR id >= 5,
// id BETWEEN 1 AND 5 OR id NOT BETWEEN 1 AND 5, id IN (1, 2) OR id NOT IN (1, 2). coversAll
// finds such arms: comparisons of one expression with constants, read as sets of values,
// whose union is every value (NULL aside: such a predicate is "always" as id = id is).
// Strings are ordered by bytes, which is not every collation's order; at worst that calls
// an OR over strings unrestricted that a collation would not, which is the safe side.

// endpoint is one end of an interval of values; inf is -∞ at a low end, +∞ at a high one.
type endpoint struct {
	v   value
	inc bool
	inf bool
}

type interval struct{ lo, hi endpoint }

// coversAll reports whether some expression's arms of an OR, together, hold for every
// value of it.
func (p *pred) coversAll(args []*pg.Node) bool {
	type group struct {
		expr *pg.Node
		ivs  []interval
	}
	var groups []group
	for _, a := range args {
		x, ivs, ok := p.armRange(a)
		if !ok {
			continue
		}
		i := slices.IndexFunc(groups, func(g group) bool { return p.sameExpr(g.expr, x) })
		if i < 0 {
			groups = append(groups, group{expr: x})
			i = len(groups) - 1
		}
		groups[i].ivs = append(groups[i].ivs, ivs...)
	}
	for _, g := range groups {
		if covers(g.ivs) {
			return true
		}
	}
	return false
}

// armRange reads one arm as the values of an expression of the row it selects.
func (p *pred) armRange(n *pg.Node) (*pg.Node, []interval, bool) {
	e := n.GetAExpr()
	if e == nil {
		return nil, nil, false
	}
	all := endpoint{inf: true}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP, pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		op := opName(e.Name)
		switch e.Kind {
		case pg.A_Expr_Kind_AEXPR_DISTINCT:
			op = "<>"
		case pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
			op = "="
		}
		x := e.Lexpr
		v, ok := p.constValue(e.Rexpr)
		if !ok {
			// The constant on the left: 5 > id is id < 5.
			if v, ok = p.constValue(e.Lexpr); !ok {
				return nil, nil, false
			}
			x = e.Rexpr
			op = map[string]string{"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "<>": "<>", "!=": "<>"}[op]
		}
		if !rowDependent(x, p.sc.names) {
			return nil, nil, false
		}
		pt := endpoint{v: v, inc: true}
		open := endpoint{v: v}
		switch op {
		case "=":
			return x, []interval{{pt, pt}}, true
		case "<>", "!=":
			return x, []interval{{all, open}, {open, all}}, true
		case "<":
			return x, []interval{{all, open}}, true
		case "<=":
			return x, []interval{{all, pt}}, true
		case ">":
			return x, []interval{{open, all}}, true
		case ">=":
			return x, []interval{{pt, all}}, true
		}
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		items := e.Rexpr.GetList().GetItems()
		if len(items) != 2 || !rowDependent(e.Lexpr, p.sc.names) {
			return nil, nil, false
		}
		a, ok1 := p.constValue(items[0])
		b, ok2 := p.constValue(items[1])
		if !ok1 || !ok2 {
			return nil, nil, false
		}
		sym := e.Kind == pg.A_Expr_Kind_AEXPR_BETWEEN_SYM || e.Kind == pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM
		if c, ok := compareValues(a, b); !ok {
			return nil, nil, false
		} else if sym && c > 0 {
			a, b = b, a
		}
		if e.Kind == pg.A_Expr_Kind_AEXPR_BETWEEN || e.Kind == pg.A_Expr_Kind_AEXPR_BETWEEN_SYM {
			return e.Lexpr, []interval{{endpoint{v: a, inc: true}, endpoint{v: b, inc: true}}}, true
		}
		return e.Lexpr, []interval{{all, endpoint{v: a}}, {endpoint{v: b}, all}}, true
	case pg.A_Expr_Kind_AEXPR_IN:
		if !rowDependent(e.Lexpr, p.sc.names) {
			return nil, nil, false
		}
		var pts []value
		for _, it := range e.Rexpr.GetList().GetItems() {
			v, ok := p.constValue(it)
			if !ok {
				return nil, nil, false
			}
			pts = append(pts, v)
		}
		if opName(e.Name) == "=" {
			var ivs []interval
			for _, v := range pts {
				ivs = append(ivs, interval{endpoint{v: v, inc: true}, endpoint{v: v, inc: true}})
			}
			return e.Lexpr, ivs, true
		}
		// NOT IN: everything between the points.
		ivs := []interval{{all, all}}
		for _, v := range pts {
			var next []interval
			for _, iv := range ivs {
				next = append(next, splitAt(iv, v)...)
			}
			ivs = next
		}
		return e.Lexpr, ivs, true
	}
	return nil, nil, false
}

// splitAt removes the value v from an interval.
func splitAt(iv interval, v value) []interval {
	if !iv.lo.inf {
		if c, ok := compareValues(iv.lo.v, v); !ok || c > 0 || c == 0 && !iv.lo.inc {
			return []interval{iv}
		}
	}
	if !iv.hi.inf {
		if c, ok := compareValues(iv.hi.v, v); !ok || c < 0 || c == 0 && !iv.hi.inc {
			return []interval{iv}
		}
	}
	return []interval{{iv.lo, endpoint{v: v}}, {endpoint{v: v}, iv.hi}}
}

// constValue folds a constant that is a number or a string (not NULL, not a boolean).
func (p *pred) constValue(n *pg.Node) (value, bool) {
	if rowDependent(n, p.sc.names) {
		return value{}, false
	}
	v, ok := p.fold(n)
	if !ok || v.kind != 'n' && v.kind != 's' {
		return value{}, false
	}
	return v, true
}

func compareValues(a, b value) (int, bool) {
	switch {
	case a.kind == 'n' && b.kind == 'n':
		return a.n.Cmp(b.n), true
	case a.kind == 's' && b.kind == 's':
		return strings.Compare(a.s, b.s), true
	}
	return 0, false
}

// covers reports whether the union of intervals is every value.
func covers(ivs []interval) bool {
	kinds := map[byte]bool{}
	for _, iv := range ivs {
		for _, e := range []endpoint{iv.lo, iv.hi} {
			if !e.inf {
				kinds[e.v.kind] = true
			}
		}
	}
	if len(kinds) > 1 {
		return false
	}
	// Low ends in order: -∞ first, then by value, inclusive before exclusive.
	slices.SortFunc(ivs, func(a, b interval) int {
		switch {
		case a.lo.inf && b.lo.inf:
			return 0
		case a.lo.inf:
			return -1
		case b.lo.inf:
			return 1
		}
		c, _ := compareValues(a.lo.v, b.lo.v)
		if c == 0 && a.lo.inc != b.lo.inc {
			if a.lo.inc {
				return -1
			}
			return 1
		}
		return c
	})
	if len(ivs) == 0 || !ivs[0].lo.inf {
		return false
	}
	reach := ivs[0].hi
	for _, iv := range ivs[1:] {
		if reach.inf {
			return true
		}
		if !iv.lo.inf {
			c, _ := compareValues(iv.lo.v, reach.v)
			if c > 0 || c == 0 && !iv.lo.inc && !reach.inc {
				return false // a gap: values no arm selects
			}
		}
		if iv.hi.inf {
			reach = iv.hi
			continue
		}
		if c, _ := compareValues(iv.hi.v, reach.v); c > 0 || c == 0 && iv.hi.inc {
			reach = iv.hi
		}
	}
	return reach.inf
}
