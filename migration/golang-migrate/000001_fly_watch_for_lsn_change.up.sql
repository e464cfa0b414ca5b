-- watch_for_lsn_change(from_lsn, timeout) waits inside the server until the
-- local database has replayed past from_lsn, checking every 50 ms, and
-- returns the replay position as text, or NULL after timeout seconds.
-- Same signature and behaviour as the fly_postgres (Elixir) migration, so a
-- database shared with an app on the original keeps working.
CREATE OR REPLACE FUNCTION watch_for_lsn_change(from_lsn TEXT, timeout REAL) RETURNS TEXT AS $$
DECLARE
  elapsed REAL := 0;
  starting_lsn pg_lsn;
  current_lsn pg_lsn;
  difference DECIMAL;
BEGIN
  LOOP
    SELECT from_lsn::pg_lsn INTO starting_lsn;
    SELECT pg_last_wal_replay_lsn() INTO current_lsn;
    IF starting_lsn IS NULL THEN
      RETURN CAST(current_lsn AS TEXT);
    END IF;
    difference = current_lsn - starting_lsn;
    IF difference > 0 THEN
      RETURN CAST(current_lsn AS TEXT);
    END IF;
    IF elapsed > timeout THEN
      RETURN NULL;
    END IF;
    PERFORM pg_sleep(0.05);
    elapsed = elapsed + 0.05;
  END LOOP;
END;
$$ LANGUAGE plpgsql;
