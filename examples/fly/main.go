// Command fly is flypg's deployable example for Fly.io: a tiny guestbook
// that runs in several regions against a Fly Postgres cluster with a
// streaming replica in each region. See README.md for the deployment.
//
// Every instance reads from the PostgreSQL instance nearest to it (the
// local replica outside the primary region) and forwards its writes over
// Fly's private network to an instance in the primary region, which runs
// them on the primary.
//
// Environment:
//
//	DATABASE_URL    the Postgres cluster (set by `fly postgres attach`)
//	FLYPG_SECRET    shared by every instance, stable across deploys (`fly secrets set`)
//	PRIMARY_REGION  where the primary lives (fly.toml)
//	FLYPG_PORT      flypg's gRPC port on the private network (default 5480)
//	PORT            HTTP port (default 8080)
//	FLY_REGION, FLY_APP_NAME are set by Fly.io.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/forward"
)

// Entry is a guestbook entry.
type Entry struct {
	ID        uint      `json:"id"`
	Message   string    `json:"message" gorm:"not null"`
	Region    string    `json:"region" gorm:"not null"` // where it was written from
	CreatedAt time.Time `json:"created_at" gorm:"index"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	// Fly stops a Machine with SIGINT (fly.toml's kill_signal), then
	// SIGKILL after kill_timeout.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := flypg.ConfigFromEnv()
	cfg.Logger = log
	if cfg.Secret == "" {
		// flypg would refuse to forward or serve without it as well; say
		// how to fix it before anything else happens.
		return errors.New("FLYPG_SECRET is not set: run `fly secrets set FLYPG_SECRET=$(openssl rand -hex 32)` (locally: export any 16+ character secret)")
	}
	onFly := os.Getenv("FLY_APP_NAME") != ""
	// In production the URL is rewritten so that this instance talks to
	// the nearest PostgreSQL: the primary (through port 5432) in the
	// primary region, the local replica (port 5433) elsewhere. Locally it
	// is used as is.
	dsn, err := flypg.ConfigureURL(os.Getenv("DATABASE_URL"), flypg.URLConfig{
		Region:        fly.Region(),
		PrimaryRegion: fly.PrimaryRegion(),
		Production:    onFly,
	})
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard, TranslateError: true})
	if err != nil {
		return fmt.Errorf("open the database: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("database pool: %w", err)
	}
	defer sqlDB.Close()

	plugin := flypg.New(cfg)
	if err := db.Use(plugin); err != nil {
		return fmt.Errorf("install flypg: %w", err)
	}
	defer plugin.Close() // on early returns; the shutdown below closes it in order
	cfg = plugin.Config()
	log.Info("starting", "region", cfg.Region, "primary_region", cfg.PrimaryRegion, "primary", plugin.IsPrimary())

	if err := checkDatabase(ctx, db, plugin.IsPrimary(), log); err != nil {
		return err
	}
	if plugin.IsPrimary() {
		if err := migrate(ctx, db); err != nil {
			return err
		}
	}

	// flypg's gRPC service: the executor that other regions forward their
	// writes to (in the primary region), and registered functions. ":port"
	// listens on every address, including the IPv6 one of Fly's private
	// network. The port is not in fly.toml's services, so the internet
	// cannot reach it; the secret authenticates every call regardless.
	grpcLis, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.Port))
	if err != nil {
		return fmt.Errorf("listen for flypg: %w", err)
	}
	grpcDone := make(chan error, 1)
	go func() { grpcDone <- plugin.Serve(grpcLis) }()

	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	g := &guestbook{db: db, region: cfg.Region, primaryRegion: cfg.PrimaryRegion, log: log, ready: plugin.Ready}
	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           g.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.ListenAndServe() }()
	log.Info("serving", "http", srv.Addr, "flypg", grpcLis.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-httpDone:
		httpDone <- err
		runErr = fmt.Errorf("HTTP: %w", err)
	case err := <-grpcDone:
		grpcDone <- err
		runErr = fmt.Errorf("flypg gRPC: %w", err)
	}
	// Within Fly's kill_timeout (5s by default): finish HTTP requests in
	// flight, then stop flypg, which rolls back transactions other regions
	// still have open here.
	sctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("HTTP shutdown: %w", err))
	}
	if err := <-httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil {
		runErr = fmt.Errorf("HTTP: %w", err)
	}
	if err := plugin.Close(); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("flypg: %w", err))
	}
	if err := <-grpcDone; err != nil && runErr == nil {
		runErr = fmt.Errorf("flypg gRPC: %w", err)
	}
	return runErr
}

// checkDatabase checks that DATABASE_URL (after rewriting) reached the
// kind of server this region expects: mistakes here are otherwise silent
// (reads from a far-away primary) or surface only at the first write.
func checkDatabase(ctx context.Context, db *gorm.DB, primary bool, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var replica bool
	// fly.Local: ask the database this instance is connected to.
	if err := db.WithContext(fly.Local(ctx)).Raw("SELECT pg_is_in_recovery()").Scan(&replica).Error; err != nil {
		return fmt.Errorf("reach the database: %w", err)
	}
	switch {
	case primary && replica:
		log.Error("PRIMARY_REGION names this region, but the database here is a replica: writes will fail. After a failover, set PRIMARY_REGION to the new primary's region and redeploy.")
	case !primary && !replica:
		log.Warn("this region forwards its writes, but its database is not a replica: reads are not local. Check that the cluster has a replica in this region and that DATABASE_URL's host allows the rewrite (see README).")
	}
	return nil
}

// migrate runs the migrations in the primary region. Deploys start two
// Machines per region at once; the advisory lock (held until the
// transaction ends; PostgreSQL's DDL is transactional) makes the second
// wait, then find the tables in place.
func migrate(ctx context.Context, db *gorm.DB) error {
	// fly.Local: migrations talk to the local database directly. In the
	// primary region flypg forwards nothing anyway; the marker keeps it so
	// wherever this code runs.
	err := db.WithContext(fly.Local(ctx)).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtext('flypg-example-migrate'))").Error; err != nil {
			return err
		}
		return tx.AutoMigrate(&Entry{})
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// guestbook is the HTTP app. Its handlers are plain GORM code: flypg
// routes each statement.
type guestbook struct {
	db            *gorm.DB
	region        string
	primaryRegion string
	log           *slog.Logger
	ready         func(context.Context) error // flypg's Plugin.Ready
}

func (g *guestbook) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", g.list)
	mux.HandleFunc("POST /entries", g.create)
	mux.HandleFunc("GET /healthz", g.health)
	mux.HandleFunc("GET /readyz", g.readyz)
	return mux
}

// list shows the latest entries, read from this region's database.
func (g *guestbook) list(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	entries := []Entry{}
	if err := g.db.WithContext(r.Context()).Order("id DESC").Limit(20).Find(&entries).Error; err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"region":         g.region,
		"primary_region": g.primaryRegion,
		"read_ms":        ms(time.Since(start)),
		"entries":        entries,
	})
}

// create signs the guestbook. Outside the primary region the insert is
// forwarded to it, and the answer waits until the local replica has the
// entry, so a reload right after shows it.
func (g *guestbook) create(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Message string `json:"message"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "send a JSON object like {\"message\": \"hello\"}: " + err.Error()})
		return
	}
	msg := strings.TrimSpace(in.Message)
	if msg == "" || utf8.RuneCountInString(msg) > 280 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `"message" must have 1 to 280 characters`})
		return
	}
	start := time.Now()
	e := Entry{Message: msg, Region: g.region}
	err := g.db.WithContext(r.Context()).Create(&e).Error
	if err != nil && !errors.Is(err, flypg.ErrReplicationTimeout) {
		g.fail(w, r, err)
		return
	}
	// A replication timeout means saved, but not yet visible here.
	writeJSON(w, http.StatusCreated, map[string]any{
		"entry":        e,
		"served_by":    g.region,
		"forwarded_to": forwardedTo(g.region, g.primaryRegion),
		"write_ms":     ms(time.Since(start)),
		"visible_here": err == nil,
	})
}

// health is Fly's health check: can this instance read its database?
func (g *guestbook) health(w http.ResponseWriter, r *http.Request) {
	sqlDB, err := g.db.DB()
	if err == nil {
		err = sqlDB.PingContext(r.Context())
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "database unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "region": g.region})
}

// readyz is fly.toml's check: the local database answers in the role this
// region expects and, outside the primary region, the executor there
// serves (flypg's Plugin.Ready). Fly routes requests only to Machines
// that pass it, and a deploy waits for it.
func (g *guestbook) readyz(w http.ResponseWriter, r *http.Request) {
	if err := g.ready(r.Context()); err != nil {
		g.log.Warn("not ready", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "region": g.region})
}

func (g *guestbook) fail(w http.ResponseWriter, r *http.Request, err error) {
	g.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, forward.ErrUnavailable), errors.Is(err, forward.ErrNotPrimary),
		errors.Is(err, forward.ErrBusy), errors.Is(err, forward.ErrTxAborted):
		// The primary region cannot take the write now; nothing was
		// saved, and a retry may succeed.
		status = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	writeJSON(w, status, map[string]string{"error": http.StatusText(status)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// forwardedTo names the region a write was forwarded to, "" for none.
func forwardedTo(region, primaryRegion string) string {
	if region == primaryRegion {
		return ""
	}
	return primaryRegion
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
