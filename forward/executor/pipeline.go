package executor

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flypg/flypg/forward/forwardpb"
	"github.com/flypg/flypg/forward/internal/sqlscan"
	"github.com/flypg/flypg/forward/internal/wire"
	"github.com/flypg/flypg/lsn"
)

// runAutocommit runs one statement in its own implicit transaction and reads
// the insert LSN after its commit, in one round trip to the primary: a
// pipeline of the statement, Sync (which commits it), the LSN query, Sync.
//
// The statement commits when its result has been read (at the Sync after
// it): rows over the size limit stop the reading before that, but as the
// primary may have sent everything, a result over the limit is reported as
// committed (a *CommittedError on the client) when the LSN query after it
// says so, never silently lost. With emit, the result goes to emit in
// parts as it is read (see partSink), and the size limit bounds a row.
func (x *Executor) runAutocommit(ctx context.Context, c *pgx.Conn, st *forwardpb.Statement, id []byte, emit partSink) (*forwardpb.Result, lsn.LSN, *stmtError) {
	var ledgerID []byte
	if x.durable != nil {
		ledgerID = id
	}
	res, lsnText, serr := x.pipeline(ctx, c, "", st, true, ledgerID, emit)
	if serr != nil && ledgerID != nil && serr.kind == kindPg && (serr.pg.Code == "25001" || serr.pg.Code == "25P01") {
		// A statement that cannot share its transaction (VACUUM and the
		// like) ran nothing: run it alone, without its ID.
		ledgerID = nil
		res, lsnText, serr = x.pipeline(ctx, c, "", st, true, nil, emit)
	}
	if serr != nil && serr.kind == kindConnInDoubt && ledgerID != nil {
		serr.kind = kindConnRecorded
	}
	if serr != nil {
		return nil, x.normalize(ctx, c, lsnText), serr
	}
	return res, x.normalize(ctx, c, lsnText), nil
}

// beginWith runs BEGIN and a transaction's first statement in one round
// trip.
func (x *Executor) beginWith(ctx context.Context, c *pgx.Conn, begin string, st *forwardpb.Statement, emit partSink) (*forwardpb.Result, *stmtError) {
	res, _, serr := x.pipeline(ctx, c, begin, st, false, nil, emit)
	if serr != nil && serr.kind == kindPg && c.PgConn().TxStatus() == 'I' {
		// The statement failed to prepare, before BEGIN was sent. Open the
		// transaction now and fail the statement in it, so that it is
		// aborted as on a direct connection; otherwise the statements that
		// follow would each commit on their own.
		if _, err := c.PgConn().Exec(ctx, begin).ReadAll(); err != nil {
			return nil, stmtErrorOf(err)
		}
		res, _, serr = x.pipeline(ctx, c, "", st, false, nil, emit)
	}
	return res, serr
}

// runStatement runs one statement inside the open transaction.
func (x *Executor) runStatement(ctx context.Context, c *pgx.Conn, st *forwardpb.Statement, emit partSink) (*forwardpb.Result, *stmtError) {
	res, _, serr := x.pipeline(ctx, c, "", st, false, nil, emit)
	return res, serr
}

// partSink takes the parts of a statement's result, all but the last, as
// they are read from the primary (each a Result with More set; the first
// carries the columns), for a client that takes results in parts
// (Statement.parts). It must not keep the statement from being read to its
// end: a sink that can no longer deliver drops what it gets. nil: the
// result is returned whole.
type partSink func(*forwardpb.Result)

// partBytes is the row data of one part of a result: large enough that a
// part costs little per row, small enough that a result held in parts costs
// little memory on either side.
const partBytes = 256 << 10

// sinkFor returns emit for a statement whose client takes parts, else nil.
func sinkFor(st *forwardpb.Statement, emit partSink) partSink {
	if !st.GetParts() || st.GetExec() {
		return nil
	}
	return emit
}

// pipeline runs a statement (see pipelineOnce). When the primary refuses
// the statement's cached prepared form (its result type changed, or it was
// deallocated), nothing of it ran: the statement is prepared afresh and,
// where no transaction of the caller's was open before it (an autocommit
// statement, or a transaction's first statement with its BEGIN), run once
// more.
func (x *Executor) pipeline(ctx context.Context, c *pgx.Conn, begin string, st *forwardpb.Statement, withLSN bool, ledgerID []byte, emit partSink) (*forwardpb.Result, string, *stmtError) {
	emit = sinkFor(st, emit)
	res, lsnText, serr := x.pipelineOnce(ctx, c, begin, st, withLSN, ledgerID, emit)
	if serr == nil || serr.kind != kindPg || !staleStatement(serr.pg) {
		return res, lsnText, serr
	}
	invalidate(ctx, c, st.GetSql())
	if !withLSN && begin == "" {
		return res, lsnText, serr // inside the caller's transaction, now aborted
	}
	if begin != "" {
		if err := x.rollback(ctx, c); err != nil {
			return nil, "", stmtErrorOf(err)
		}
	}
	return x.pipelineOnce(ctx, c, begin, st, withLSN, ledgerID, emit)
}

// pipelineOnce sends [begin] statement Sync [LSN query Sync] in one write
// and reads the answers. Results are asked for in the formats pgx's stdlib
// driver uses, so that the client decodes exactly what stdlib would.
//
// ledgerID, for a lone statement under durable deduplication, is inserted
// into the deduplication table first, in the statement's own transaction:
// if an earlier attempt committed, that insert conflicts and nothing runs.
//
// A lone statement that may have left session state (see sqlscan.Classify)
// reads the LSN with an unprepared query (the statement may have
// deallocated the prepared one) which, for a statement that calls
// functions, also checks the session's state.
func (x *Executor) pipelineOnce(ctx context.Context, c *pgx.Conn, begin string, st *forwardpb.Statement, withLSN bool, ledgerID []byte, emit partSink) (*forwardpb.Result, string, *stmtError) {
	args, err := decodeArgs(st.GetArgs())
	if err != nil {
		return nil, "", &stmtError{err: err, kind: kindBadArg}
	}
	cs, err := describe(ctx, c, st.GetSql())
	if err != nil {
		var pg *pgconn.PgError
		if st.GetExec() && len(args) == 0 && errors.As(err, &pg) && pg.Code == "42601" {
			// Not preparable, typically several statements: run it with
			// the simple protocol, as pgx's Exec would. (A real syntax
			// error fails there the same way.)
			return x.simple(ctx, c, begin, st.GetSql(), withLSN, ledgerID)
		}
		return nil, "", stmtErrorOf(err)
	}
	sd := cs.sd
	markTaint(c, cs.taint)
	if len(sd.ParamOIDs) != len(args) {
		return nil, "", &stmtError{err: fmt.Errorf("statement has %d parameters, got %d arguments", len(sd.ParamOIDs), len(args)), kind: kindBadArg}
	}
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(c.TypeMap(), sd, args); err != nil {
		return nil, "", &stmtError{err: err, kind: kindBadArg}
	}

	var lsnCS, ledgerCS *cachedStmt
	if withLSN && cs.taint == taintNone {
		if lsnCS, err = describe(ctx, c, lsnSQL); err != nil {
			return nil, "", stmtErrorOf(err)
		}
	}
	if ledgerID != nil {
		if ledgerCS, err = describe(ctx, c, x.durable.insertSQL()); err != nil {
			return nil, "", stmtErrorOf(err)
		}
	}

	p := c.PgConn().StartPipeline(ctx)
	if begin != "" {
		p.SendQueryParams(begin, nil, nil, nil, nil)
	}
	if ledgerCS != nil {
		p.SendQueryStatement(ledgerCS.sd, [][]byte{ledgerID}, []int16{pgx.BinaryFormatCode}, nil)
	}
	p.SendQueryStatement(sd, eqb.ParamValues, eqb.ParamFormats, resultFormats(sd))
	p.SendPipelineSync()
	if withLSN {
		switch {
		case cs.taint != taintNone:
			p.SendQueryParams(lsnQuery(cs.taint), nil, nil, nil, nil)
		case ledgerCS != nil:
			// When the ID's insert fails, the server skips the statement,
			// but pgx keeps the skipped statement's description queued and
			// would hand it to the next SendQueryStatement: send the LSN
			// query by name, which uses no queued description.
			p.SendQueryPrepared(lsnCS.sd.Name, nil, nil, nil)
		default:
			p.SendQueryStatement(lsnCS.sd, nil, nil, nil)
		}
		p.SendPipelineSync()
	}
	if err := p.Flush(); err != nil {
		p.Close()
		if pgconn.SafeToRetry(err) {
			// pgx sent nothing (the context was already done, say).
			return nil, "", &stmtError{err: err, kind: kindConn}
		}
		// Part of the pipeline may have reached the server.
		return nil, "", &stmtError{err: err, kind: kindConnInDoubt}
	}

	var stmtErr error
	if begin != "" {
		stmtErr = discardResult(p)
	}
	if ledgerCS != nil && stmtErr == nil {
		if err := discardResult(p); err != nil {
			p.Close()
			if x.durable.isConflict(err) {
				return x.earlier(ctx, c, ledgerID, err)
			}
			se := stmtErrorOf(err)
			switch se.kind {
			case kindPg:
				se.kind = kindLedgerFailed
			case kindConn:
				se.kind = kindConnInDoubt // the statement was sent after it
			}
			return nil, "", se
		}
	}
	var res *forwardpb.Result
	var syncErr error
	if stmtErr == nil {
		res, stmtErr, syncErr = x.readPipelined(p, st.GetExec(), emit)
	}
	var lsnText string
	var lsnErr error
	if withLSN {
		lsnText, lsnErr = readLSN(p, c)
	}
	if err := p.Close(); err != nil && stmtErr == nil && lsnErr == nil && syncErr == nil {
		lsnErr = err
	}
	if stmtErr == nil && syncErr != nil {
		if se := stmtErrorOf(syncErr); se.kind == kindPg && withLSN {
			// The statement ran; its COMMIT (the Sync) failed, a deferred
			// constraint say: nothing committed. pgx hands over the
			// statement's rows before that error: so does the client.
			se.res = res
			return nil, "", se
		}
		stmtErr = syncErr
	}
	if stmtErr == nil && cs.resets && !withLSN {
		// Inside a transaction, after DEALLOCATE: its next statements
		// must not find their prepared forms gone.
		if err := resetStatements(ctx, c); err != nil {
			return nil, "", stmtErrorOf(err)
		}
	}
	if stmtErr != nil {
		var tl *wire.ResultTooLargeError
		if errors.As(stmtErr, &tl) {
			if !withLSN {
				// Inside a transaction: nothing has committed.
				return nil, "", &stmtError{err: stmtErr, kind: kindTooLarge}
			}
			if lsnErr == nil {
				// Ran and committed; only the answer is too big.
				return nil, lsnText, &stmtError{err: stmtErr, kind: kindTooLargeCommitted}
			}
		}
		se := stmtErrorOf(stmtErr)
		if se.kind == kindConn && withLSN {
			// The statement may have committed before the connection failed.
			se.kind = kindConnInDoubt
		}
		return nil, "", se
	}
	if lsnErr != nil {
		// The statement committed; only the LSN read failed.
		return nil, "", &stmtError{err: fmt.Errorf("read commit LSN: %w", lsnErr), kind: kindConnInDoubt}
	}
	return res, lsnText, nil
}

// lsnSQL reads the position a lone statement's commit is replicated by.
// The insert position is always at or past the commit record, but it also
// covers WAL other sessions inserted and have not flushed yet (an aborted
// transaction's, an asynchronous commit's), which no replica receives
// until the WAL writer flushes it, up to wal_writer_delay later. Under
// synchronous_commit (anything but off) the statement's own commit was
// flushed before it returned, so the flush position covers it and waits
// for nobody else's WAL. (Only for lone statements: a transaction may have
// turned synchronous_commit off for itself with SET LOCAL, which is gone
// by the time this runs; transactions use the insert position.)
const lsnSQL = `SELECT CASE WHEN current_setting('synchronous_commit') = 'off' THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END::text`

// lsnQuery is the LSN query after a lone statement of taint t: with the
// session state check when the statement called functions.
func lsnQuery(t taint) string {
	if t == taintMaybe {
		return lsnSQL + ", " + stateCheckSQL
	}
	return lsnSQL
}

// noteStateCheck records the state check's answer ("t" or "f", text or
// binary) for c's unit; no answer leaves the taint as it is.
func noteStateCheck(c *pgx.Conn, v []byte) {
	switch {
	case len(v) != 1:
	case v[0] == 't' || v[0] == 1:
		markTaint(c, taintSure)
	case taintOf(c) == taintMaybe:
		cleared(c)
	}
}

// simple runs argument-less SQL, possibly several statements, with the
// simple protocol (after begin, when it opens a transaction), then reads
// the insert LSN when the SQL ran in its own implicit transaction.
func (x *Executor) simple(ctx context.Context, c *pgx.Conn, begin, sql string, withLSN bool, ledgerID []byte) (*forwardpb.Result, string, *stmtError) {
	q, prefix := sql, ""
	if ledgerID != nil {
		// The simple protocol has no parameters; the ID is our own bytes.
		prefix = fmt.Sprintf("INSERT INTO %s (id, committed) VALUES ('\\x%x', true);\n", x.durable.table, ledgerID)
		q = prefix + q
	}
	if begin != "" {
		q = begin + ";\n" + q
	}
	t := sqlscan.Classify(sql)
	markTaint(c, t)
	results, err := c.PgConn().Exec(ctx, q).ReadAll()
	if err != nil && ledgerID != nil && x.durable.isConflict(err) {
		return x.earlier(ctx, c, ledgerID, err)
	}
	if err != nil {
		se := stmtErrorOf(err)
		if se.kind == kindConn && withLSN {
			se.kind = kindConnInDoubt
		}
		if se.kind == kindPg && prefix != "" && !fromStatement(se.pg, x.durable.table, len(prefix)) {
			se.kind = kindLedgerFailed
		}
		return nil, "", se
	}
	var res *forwardpb.Result
	if len(results) > 0 {
		res = wire.ResultFromCommandTag(results[len(results)-1].CommandTag)
	} else {
		res = &forwardpb.Result{}
	}
	if !withLSN {
		if sqlscan.ResetsStatements(sql) {
			if err := resetStatements(ctx, c); err != nil {
				return nil, "", stmtErrorOf(err)
			}
		}
		return res, "", nil
	}
	// Unprepared: the SQL may have deallocated prepared statements.
	lr, err := c.PgConn().Exec(ctx, lsnQuery(t)).ReadAll()
	if err == nil && (len(lr) != 1 || len(lr[0].Rows) != 1) {
		err = fmt.Errorf("LSN query returned %d results", len(lr))
	}
	if err != nil {
		return nil, "", &stmtError{err: fmt.Errorf("read commit LSN: %w", err), kind: kindConnInDoubt}
	}
	row := lr[0].Rows[0]
	if len(row) > 1 {
		noteStateCheck(c, row[1])
	}
	return res, string(row[0]), nil
}

// fromStatement reports whether a PostgreSQL error of SQL run after the
// ID's insert (prefixLen bytes) surely came from that SQL, not the insert:
// it points into the SQL, or names another table.
func fromStatement(pg *pgconn.PgError, table string, prefixLen int) bool {
	return int(pg.Position) > prefixLen || (pg.TableName != "" && pg.TableName != table)
}

// earlier answers a lone statement whose request ID is already in the
// deduplication table: an attempt this process never saw committed it (the
// current LSN is at or past that commit), or a Resolve declared it not
// committed (a tombstone), and it must not run now either.
func (x *Executor) earlier(ctx context.Context, c *pgx.Conn, id []byte, conflict error) (*forwardpb.Result, string, *stmtError) {
	done, err := x.durable.committedFlag(ctx, c, id)
	if err != nil {
		return nil, "", &stmtError{err: err, kind: kindConnInDoubt}
	}
	if !done {
		return nil, "", &stmtError{err: conflict, kind: kindTombstoned}
	}
	var text string
	if err := c.QueryRow(ctx, lsnSQL).Scan(&text); err != nil {
		return nil, "", &stmtError{err: err, kind: kindConnInDoubt}
	}
	return nil, text, &stmtError{err: conflict, kind: kindCommittedEarlier}
}

// discardResult reads a result that carries nothing (BEGIN).
func discardResult(p *pgconn.Pipeline) error {
	r, err := p.GetResults()
	if err != nil {
		return err
	}
	rr, ok := r.(*pgconn.ResultReader)
	if !ok {
		return fmt.Errorf("pipeline: expected a result, got %T", r)
	}
	_, err = rr.Close()
	return err
}

// readPipelined reads the statement's result (discarding its rows for an
// exec, whose caller drops them; in parts to emit if set), then the Sync
// after it, whose error it returns apart.
func (x *Executor) readPipelined(p *pgconn.Pipeline, exec bool, emit partSink) (*forwardpb.Result, error, error) {
	r, err := p.GetResults()
	if err != nil {
		return nil, err, nil
	}
	rr, ok := r.(*pgconn.ResultReader)
	if !ok {
		return nil, fmt.Errorf("pipeline: expected a result, got %T", r), nil
	}
	var res *forwardpb.Result
	if exec {
		for rr.NextRow() {
		}
		var tag pgconn.CommandTag
		if tag, err = rr.Close(); err == nil {
			res = wire.ResultFromCommandTag(tag)
		}
	} else {
		res, err = wire.StreamResult(&resultRows{rr: rr}, x.cfg.MaxResponseBytes, min(partBytes, x.cfg.MaxResponseBytes), emit)
	}
	if err != nil {
		syncNext(p)
		return nil, err, nil
	}
	return res, nil, syncNext(p)
}

// readLSN reads the LSN query's answer, and the state check's when it
// carries one.
func readLSN(p *pgconn.Pipeline, c *pgx.Conn) (string, error) {
	r, err := p.GetResults()
	if err != nil {
		return "", err
	}
	rr, ok := r.(*pgconn.ResultReader)
	if !ok {
		return "", fmt.Errorf("pipeline: expected a result, got %T", r)
	}
	res := rr.Read()
	if res.Err != nil {
		return "", res.Err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) < 1 {
		return "", fmt.Errorf("pipeline: LSN query returned %d rows", len(res.Rows))
	}
	if len(res.Rows[0]) > 1 {
		noteStateCheck(c, res.Rows[0][1])
	}
	return string(res.Rows[0][0]), syncNext(p)
}

func syncNext(p *pgconn.Pipeline) error {
	r, err := p.GetResults()
	if err != nil {
		return err
	}
	if _, ok := r.(*pgconn.PipelineSync); !ok {
		return fmt.Errorf("pipeline: expected Sync, got %T", r)
	}
	return nil
}

// normalize parses the LSN text the primary returned and normalizes it
// with the primary's WAL segment size; 0 if the text is not an LSN.
func (x *Executor) normalize(ctx context.Context, c *pgx.Conn, text string) lsn.LSN {
	l, err := lsn.Parse(text)
	if err != nil {
		return 0
	}
	return l.Normalize(x.segmentSize(ctx, c))
}

// resultRows adapts a pgconn.ResultReader to wire.RowSource.
type resultRows struct {
	rr  *pgconn.ResultReader
	tag pgconn.CommandTag
	err error
}

func (r *resultRows) Next() bool {
	if r.rr.NextRow() {
		return true
	}
	r.tag, r.err = r.rr.Close()
	return false
}
func (r *resultRows) Err() error                                   { return r.err }
func (r *resultRows) FieldDescriptions() []pgconn.FieldDescription { return r.rr.FieldDescriptions() }
func (r *resultRows) RawValues() [][]byte                          { return r.rr.Values() }
func (r *resultRows) CommandTag() pgconn.CommandTag                { return r.tag }
func (r *resultRows) Close() {
	if _, err := r.rr.Close(); r.err == nil {
		r.err = err
	}
}

// resultFormats are the formats pgx's stdlib driver asks for, so that the
// client decodes exactly what stdlib would.
func resultFormats(sd *pgconn.StatementDescription) []int16 {
	byOID := wire.ResultFormats()
	f := make([]int16, len(sd.Fields))
	for i, fd := range sd.Fields {
		f[i] = byOID[fd.DataTypeOID]
	}
	return f
}
