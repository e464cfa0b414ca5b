package pgtest

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// defaultSettings are the postgresql.conf settings of every node, tuned for
// fast, disposable, loopback-only clusters. Options.Settings override them.
// The port and the unix socket directory differ per node and are passed on
// the postgres command line instead.
func defaultSettings(replicas int) map[string]string {
	return map[string]string{
		"listen_addresses": "127.0.0.1",
		// Tests open many connections (pools per simulated region).
		"max_connections": "200",
		"shared_buffers":  "32MB",

		"wal_level":             "replica",
		"max_wal_senders":       strconv.Itoa(replicas + 10),
		"max_replication_slots": "10",
		// Lets a stopped replica catch up without replication slots.
		"wal_keep_size": "256MB",
		"hot_standby":   "on",
		// A replica whose connection to the primary broke retries after
		// this long (default 5s); tests cut and restore links.
		"wal_retrieve_retry_interval": "100ms",
		// Detect a dead peer (e.g. a black-holed link) in seconds rather
		// than a minute.
		"wal_sender_timeout":           "5s",
		"wal_receiver_timeout":         "5s",
		"wal_receiver_status_interval": "1s",

		// Durability is pointless for throw-away data and costs time.
		"fsync":             "off",
		"full_page_writes":  "off",
		"jit":               "off",
		"logging_collector": "off", // stderr goes to the node's log file
		"log_destination":   "stderr",
		"log_line_prefix":   "%m [%p] %q%a ",
		"lc_messages":       "C",
	}
}

// mergeSettings returns defaults overridden by overrides.
func mergeSettings(defaults, overrides map[string]string) map[string]string {
	out := maps.Clone(defaults)
	maps.Copy(out, overrides)
	return out
}

// appendConfig appends settings to dataDir/postgresql.conf, where later
// lines win over initdb's. Replicas inherit the file through pg_basebackup.
// Appending as root keeps the file's owner.
func appendConfig(dataDir string, settings map[string]string) error {
	var b strings.Builder
	b.WriteString("\n# pgtest\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteSetting(settings[k]))
	}
	return appendFile(filepath.Join(dataDir, "postgresql.conf"), b.String())
}

// quoteSetting quotes a value for postgresql.conf; every setting type
// accepts a quoted value. Values the caller quoted already are kept.
func quoteSetting(v string) string {
	if len(v) >= 2 && strings.HasPrefix(v, "'") && strings.HasSuffix(v, "'") {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// writeHBA trusts every local and loopback connection, replication
// included. initdb -A trust does much the same, but spelling it out keeps
// the cluster independent of initdb's defaults across versions.
func writeHBA(dataDir string) error {
	const hba = `# pgtest: trust everything local
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
`
	// The file exists (initdb wrote it), so rewriting it keeps its owner.
	return os.WriteFile(filepath.Join(dataDir, "pg_hba.conf"), []byte(hba), 0o600)
}

// setPrimaryConninfo points a replica made by pg_basebackup -R at addr
// (the primary or a Link in front of it) and names it, so that the primary's
// pg_stat_replication shows which replica is which. It appends to
// postgresql.auto.conf, where the last line wins over the one -R wrote.
func setPrimaryConninfo(dataDir, host string, port int, appName string) error {
	conninfo := fmt.Sprintf("host=%s port=%d user=postgres application_name=%s", host, port, appName)
	return appendFile(filepath.Join(dataDir, "postgresql.auto.conf"),
		fmt.Sprintf("primary_conninfo = %s\n", quoteSetting(conninfo)))
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
