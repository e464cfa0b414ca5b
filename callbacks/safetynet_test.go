package callbacks

import (
	"fmt"
	"testing"
)

func TestStatementShape(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"SELECT f('x')", "select F(  'yy' )"},
		{"SELECT f($1)", "SELECT f(42)"},
		{"SELECT * FROM t WHERE id = 1 -- c", "select * from t where id = $7"},
		{`SELECT "Mixed" FROM t`, `SELECT "Mixed"  FROM  t`},
	} {
		if sa, sb := statementShape(c.a), statementShape(c.b); sa != sb {
			t.Errorf("shapes of %q and %q differ: %q, %q", c.a, c.b, sa, sb)
		}
	}
	for _, c := range []struct{ a, b string }{
		{"SELECT f('x')", "SELECT g('x')"},
		{`SELECT "Mixed" FROM t`, `SELECT "mixed" FROM t`},
		{"SELECT f(1)", "SELECT f()"},
	} {
		if sa, sb := statementShape(c.a), statementShape(c.b); sa == sb {
			t.Errorf("%q and %q share the shape %q", c.a, c.b, sa)
		}
	}
	if got := statementShape("SELECT f('it''s') FROM t"); got != "select f ( ? ) from t" {
		t.Errorf("shape %q", got)
	}
}

func TestShapesLoggedOnce(t *testing.T) {
	var s shapes
	if !s.first("a") || s.first("a") {
		t.Fatal("a shape is not first exactly once")
	}
	for i := 1; i < maxShapes; i++ {
		s.first(fmt.Sprint(i))
	}
	if !s.first("one past the bound") {
		t.Error("the first shape past the bound is not reported")
	}
	if s.first("two past the bound") {
		t.Error("shapes past the bound keep being reported")
	}
}
