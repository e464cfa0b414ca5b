package callbacks

import (
	"reflect"
	"runtime"
	"strings"
	"sync"

	"gorm.io/gorm"
	gormcb "gorm.io/gorm/callbacks"
	"gorm.io/gorm/schema"
)

// COMMIT may travel with a statement only when nothing GORM runs after it,
// inside its implicit transaction, can fail or write: once COMMIT has left,
// a later error can no longer roll the row back, and a later write has no
// transaction to join. commitMayTravel decides that from the callback chain
// GORM actually runs (including callbacks the application registered after
// flypg was installed), from the hooks and associations of the statement,
// and from GORM's scan of RETURNING values into the model. Every doubt
// answers false: the statement then takes the ordinary path, with a COMMIT
// of its own, which costs one more round trip and is always correct.

// afterStep is what runs between a statement callback and GORM's commit.
type afterStep uint8

const (
	stepUnknown      afterStep = iota // anything we cannot vouch for
	stepOurs                          // flypg's own callbacks
	stepHooks                         // GORM's after-hooks callback (AfterCreate, ...)
	stepAssociations                  // GORM's saving of associations after the row
)

// chainInfo describes one compiled callback chain of GORM.
type chainInfo struct {
	ok    bool // the chain is GORM's own up to its commit, with known steps after the statement
	hooks bool // GORM's after-hooks callback runs after the statement
	assoc bool // GORM's after-associations callback runs after the statement
}

// chainCache remembers what the chain of each operation allows, keyed by
// the identity of GORM's compiled chain: registering, replacing or removing
// a callback compiles a new one, which is then inspected afresh.
type chainCache struct {
	mu     sync.Mutex
	chains map[string]chainEntry
}

type chainEntry struct {
	fns  uintptr // data pointer of the processor's compiled function slice
	n    int
	info chainInfo
}

var (
	commitPC = reflect.ValueOf(gormcb.CommitOrRollbackTransaction).Pointer()
	hookPCs  = map[uintptr]bool{
		reflect.ValueOf(gormcb.AfterCreate).Pointer(): true,
		reflect.ValueOf(gormcb.AfterUpdate).Pointer(): true,
		reflect.ValueOf(gormcb.AfterDelete).Pointer(): true,
	}
	// flypg's own callbacks that may sit between a statement and GORM's
	// commit.
	ourPCs = map[uintptr]bool{
		reflect.ValueOf(recordOutcome).Pointer():     true,
		reflect.ValueOf((&Router{}).await).Pointer(): true,
	}
)

// statementCallbacks are the names of GORM's statement callbacks, and the
// function that GORM's callbacks package registers under each.
var statementCallbacks = map[string]struct{ name, fn string }{
	"create": {"gorm:create", "Create"},
	"update": {"gorm:update", "Update"},
	"delete": {"gorm:delete", "Delete"},
}

// info returns what the chain of op allows, inspecting it when GORM has
// compiled a new one since the last look.
func (c *chainCache) info(db *gorm.DB, op string) chainInfo {
	proc := processorOf(db, op)
	if proc == nil {
		return chainInfo{}
	}
	fns, ok := compiledFns(proc)
	if !ok {
		return chainInfo{}
	}
	var key uintptr
	if fns.Len() > 0 {
		key = fns.Pointer()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.chains[op]; ok && e.fns == key && e.n == fns.Len() {
		return e.info
	}
	info := inspectChain(proc, op, fns)
	if c.chains == nil {
		c.chains = map[string]chainEntry{}
	}
	c.chains[op] = chainEntry{fns: key, n: fns.Len(), info: info}
	return info
}

// processor is the part of GORM's callback processor flypg uses.
type processor interface{ Get(string) func(*gorm.DB) }

func processorOf(db *gorm.DB, op string) processor {
	cb := db.Callback()
	switch op {
	case "create":
		return cb.Create()
	case "update":
		return cb.Update()
	case "delete":
		return cb.Delete()
	}
	return nil
}

// compiledFns returns GORM's compiled chain: the processor's handlers in the
// order GORM calls them. GORM exposes no accessor for the order, so it is
// read (never written) by reflection; if GORM's layout ever changes, the
// answer is "unknown" and no COMMIT travels early.
func compiledFns(proc processor) (reflect.Value, bool) {
	v := reflect.ValueOf(proc)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	fns := v.Elem().FieldByName("fns")
	if !fns.IsValid() || fns.Kind() != reflect.Slice || fns.Type().Elem() != reflect.TypeOf(func(*gorm.DB) {}) {
		return reflect.Value{}, false
	}
	return fns, true
}

// inspectChain classifies every callback between op's statement callback
// and GORM's commit.
func inspectChain(proc processor, op string, fns reflect.Value) chainInfo {
	sc := statementCallbacks[op]
	stmtFn := proc.Get(sc.name)
	if stmtFn == nil {
		return chainInfo{}
	}
	stmtPC := reflect.ValueOf(stmtFn).Pointer()
	if !gormClosure(stmtPC, sc.fn) {
		return chainInfo{} // replaced by the application: we cannot tell what it does
	}
	var info chainInfo
	seen := false
	for i := 0; i < fns.Len(); i++ {
		pc := fns.Index(i).Pointer()
		if !seen {
			seen = pc == stmtPC
			continue
		}
		if pc == commitPC {
			info.ok = true
			return info
		}
		switch classify(pc) {
		case stepOurs:
		case stepHooks:
			info.hooks = true
		case stepAssociations:
			info.assoc = true
		default:
			return chainInfo{}
		}
	}
	return chainInfo{} // no commit after the statement: not GORM's implicit transaction
}

func classify(pc uintptr) afterStep {
	if hookPCs[pc] {
		return stepHooks
	}
	if gormClosure(pc, "SaveAfterAssociations") {
		return stepAssociations
	}
	if ourPCs[pc] {
		return stepOurs
	}
	return stepUnknown
}

// gormClosure reports whether pc is the closure that GORM's callbacks
// package function fn returns (Create, SaveAfterAssociations, ...). The
// compiler names such a closure gorm.io/gorm/callbacks.fn.funcN, or, where
// fn was inlined into its caller, gorm.io/gorm/callbacks.Caller.fn.funcN.
func gormClosure(pc uintptr, fn string) bool {
	f := runtime.FuncForPC(pc)
	if f == nil {
		return false
	}
	name, ok := strings.CutPrefix(f.Name(), "gorm.io/gorm/callbacks.")
	if !ok {
		return false
	}
	parts := strings.Split(name, ".")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == fn && strings.HasPrefix(parts[i+1], "func") {
			return true
		}
	}
	return false
}

// commitMayTravel reports whether nothing after op's statement, in GORM's
// implicit transaction, can fail or write.
func (r *Router) commitMayTravel(op string, db *gorm.DB) bool {
	info := r.chains.info(db, op)
	if !info.ok {
		return false
	}
	stmt := db.Statement
	if info.hooks && afterHooks(op, stmt) {
		return false
	}
	if info.assoc && afterAssociations(op, stmt) {
		return false
	}
	return returningScanSafe(op, stmt)
}

// afterHooks reports whether GORM's after-hooks callback would call a hook
// of the model.
func afterHooks(op string, stmt *gorm.Statement) bool {
	s := stmt.Schema
	if s == nil || stmt.SkipHooks {
		return false
	}
	switch op {
	case "create":
		return s.AfterCreate || s.AfterSave
	case "update":
		return s.AfterUpdate || s.AfterSave
	case "delete":
		return s.AfterDelete
	}
	return true
}

// afterAssociations reports whether GORM would save associations after the
// row (has one, has many, many to many) because one is set and not
// omitted. Belongs-to associations are saved before the row.
func afterAssociations(op string, stmt *gorm.Statement) bool {
	s := stmt.Schema
	if s == nil || op == "delete" {
		return false
	}
	rels := &s.Relationships
	if len(rels.HasOne)+len(rels.HasMany)+len(rels.Many2Many) == 0 {
		return false
	}
	selected, restricted := stmt.SelectAndOmitColumns(op == "create", op == "update")
	for _, group := range [][]*schema.Relationship{rels.HasOne, rels.HasMany, rels.Many2Many} {
		for _, rel := range group {
			if v, ok := selected[rel.Name]; (ok && !v) || (!ok && restricted) {
				continue // omitted, as GORM's own association callbacks decide
			}
			if relationSet(stmt, rel) {
				return true
			}
		}
	}
	return false
}

// relationSet reports whether any row of the statement carries a value for
// rel, which GORM would then save after the row.
func relationSet(stmt *gorm.Statement, rel *schema.Relationship) bool {
	rv := stmt.ReflectValue
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		for i := 0; i < rv.Len(); i++ {
			obj := rv.Index(i)
			if reflect.Indirect(obj).Kind() != reflect.Struct {
				return true
			}
			if _, zero := rel.Field.ValueOf(stmt.Context, obj); !zero {
				return true
			}
		}
		return false
	case reflect.Struct:
		_, zero := rel.Field.ValueOf(stmt.Context, rv)
		return !zero
	}
	return true
}
