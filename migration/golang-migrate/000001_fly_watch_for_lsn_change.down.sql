DROP FUNCTION IF EXISTS watch_for_lsn_change(TEXT, REAL);
