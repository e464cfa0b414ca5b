package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/pgtest"
)

// The three simulated regions. Any names work; these are Fly.io regions
// near and far from the primary, which the -near-rtt and -rtt flags
// imitate.
const (
	primaryRegion = "iad" // Ashburn, Virginia: the PostgreSQL primary
	replicaRegion = "syd" // Sydney: a streaming replica and the HTTP app, far away
	nearRegion    = "ams" // Amsterdam: another streaming replica, nearer
)

// regionsConfig says how to build the two regions.
type regionsConfig struct {
	// rtt is the simulated round-trip time between the regions, on both
	// cross-region links: app → executor and primary → replica.
	rtt time.Duration
	// nearRTT is the same for the near replica region.
	nearRTT time.Duration
	// onWrite receives the replica-region plugin's write events.
	onWrite func(context.Context, flypg.WriteEvent)
	// logger receives flypg's logs (nil: silent); logf pgtest's progress
	// messages (nil: none).
	logger *slog.Logger
	logf   func(format string, args ...any)
}

// regions is the whole simulated deployment, in this process: a PostgreSQL
// primary and streaming replica, and one app instance per region.
type regions struct {
	rtt     time.Duration // the simulated distance, on both links
	cluster *pgtest.Cluster
	// replicationLink carries the replica's WAL stream from the primary;
	// executorLink carries the replica-region app's forwarded writes to
	// the primary-region app's executor. Both add the -rtt delay.
	replicationLink *pgtest.Link
	executorLink    *pgtest.Link

	primary instance // iad: GORM on the primary, serves the executor
	replica instance // syd: GORM on the replica, serves HTTP
	near    instance // ams: GORM on the second replica
	nearRTT time.Duration

	nearReplicationLink *pgtest.Link // replica2's WAL stream, nearRTT
	nearExecutorLink    *pgtest.Link // ams's app to iad's executor, nearRTT

	executorAddr string        // where the primary-region executor listens
	served       chan struct{} // closed when the executor's Serve returns
	serveErr     error         // Serve's result, valid once served is closed
}

// instance is one app instance: a GORM database with the flypg plugin.
type instance struct {
	region string
	db     *gorm.DB
	plugin *flypg.Plugin
}

// startRegions starts the cluster and both app instances. On error it
// leaves nothing behind.
func startRegions(ctx context.Context, cfg regionsConfig) (_ *regions, err error) {
	r := &regions{rtt: cfg.rtt, nearRTT: cfg.nearRTT}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.Close())
		}
	}()

	r.cluster, err = pgtest.Start(ctx, pgtest.Options{Replicas: 2, ReplicationLinks: true, Logf: cfg.logf})
	if err != nil {
		return nil, fmt.Errorf("start a PostgreSQL primary and replica: %w", err)
	}
	r.replicationLink = r.cluster.ReplicationLink(0)
	if err := r.replicationLink.SetRTT(cfg.rtt); err != nil {
		return nil, fmt.Errorf("set the replication link's RTT: %w", err)
	}
	r.nearReplicationLink = r.cluster.ReplicationLink(1)
	if err := r.nearReplicationLink.SetRTT(cfg.nearRTT); err != nil {
		return nil, fmt.Errorf("set the near replication link's RTT: %w", err)
	}

	// Every node shares one secret, which authenticates forwarded writes.
	// In production it is a stable secret (FLYPG_SECRET); here each run
	// makes up its own.
	secret := rand.Text()

	// The primary region: the plugin changes nothing there (statements run
	// on the primary directly), but the instance serves the executor that
	// replica regions forward their writes to.
	r.primary, err = openInstance(r.cluster.Primary.DSN(""), flypg.Config{
		Region:        primaryRegion,
		PrimaryRegion: primaryRegion,
		Secret:        secret,
		Logger:        cfg.logger,
	})
	if err != nil {
		return nil, err
	}
	// Migrations run in the primary region. fly.Local is a no-op there,
	// but it is the habit to keep: in any region it makes GORM talk to the
	// local database directly, never through the plugin.
	if err := r.primary.db.WithContext(fly.Local(ctx)).AutoMigrate(allModels()...); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	// Loopback only: an executor runs SQL for whoever holds the secret.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the executor: %w", err)
	}
	r.executorAddr = lis.Addr().String()
	r.served = make(chan struct{})
	go func() {
		defer close(r.served)
		r.serveErr = r.primary.plugin.Serve(lis) // returns nil after plugin.Close
	}()

	// The replica regions serve reads from their replicas, so the tables
	// must have arrived there before the first request.
	if err := r.cluster.WaitReplicated(ctx); err != nil {
		return nil, fmt.Errorf("wait for the migration to reach the replicas: %w", err)
	}
	// Each replica region's app reaches iad's executor over a link of its
	// region's distance.
	if r.replica, r.executorLink, err = r.openReplicaRegion(replicaRegion, 0, cfg.rtt, secret, cfg); err != nil {
		return nil, err
	}
	if r.near, r.nearExecutorLink, err = r.openReplicaRegion(nearRegion, 1, cfg.nearRTT, secret, cfg); err != nil {
		return nil, err
	}
	return r, nil
}

// openReplicaRegion opens the app instance of a replica region on
// Replicas[i], forwarding to the executor through a new link of the given
// round-trip time (returned, for Close).
func (r *regions) openReplicaRegion(region string, i int, rtt time.Duration, secret string, cfg regionsConfig) (instance, *pgtest.Link, error) {
	link, err := pgtest.NewLink(region+"->"+primaryRegion+" executor", r.executorAddr)
	if err != nil {
		return instance{}, nil, fmt.Errorf("%s executor link: %w", region, err)
	}
	if err := link.SetRTT(rtt); err != nil {
		return instance{}, link, fmt.Errorf("set the %s executor link's RTT: %w", region, err)
	}
	in, err := openInstance(r.cluster.Replicas[i].DSN(""), flypg.Config{
		Region:        region,
		PrimaryRegion: primaryRegion,
		PrimaryAddr:   link.Addr(),
		Secret:        secret,
		Logger:        cfg.logger,
		OnWrite:       cfg.onWrite,
	})
	return in, link, err
}

// openInstance opens GORM on dsn and installs a flypg plugin configured by
// cfg, with the app's functions registered.
func openInstance(dsn string, cfg flypg.Config) (instance, error) {
	in := instance{region: cfg.Region, plugin: flypg.New(cfg)}
	if err := registerFunctions(in.plugin); err != nil {
		return instance{}, fmt.Errorf("%s: %w", cfg.Region, err)
	}
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{
		// The demo prints its own line per request; GORM's slow-query
		// and not-found logs would only add noise.
		Logger: logger.Discard,
		// PostgreSQL errors arrive through flypg's forwarding unchanged,
		// so GORM can translate them (a foreign key violation becomes
		// gorm.ErrForeignKeyViolated) in the replica region too.
		TranslateError: true,
		// PostgreSQL keeps microseconds: rounding here makes the
		// timestamps a write returns equal to those a read returns.
		NowFunc: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	})
	if err != nil {
		return instance{}, fmt.Errorf("%s: open the database: %w", cfg.Region, err)
	}
	if err := db.Use(in.plugin); err != nil {
		closeDB(db)
		return instance{}, fmt.Errorf("%s: install flypg: %w", cfg.Region, err)
	}
	in.db = db
	return in, nil
}

// close stops the instance's plugin, then its connection pool.
func (in instance) close() error {
	if in.plugin == nil {
		return nil
	}
	err := in.plugin.Close()
	if in.db != nil {
		err = errors.Join(err, closeDB(in.db))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", in.region, err)
	}
	return nil
}

func closeDB(db *gorm.DB) error {
	s, err := db.DB()
	if err != nil {
		return err
	}
	return s.Close()
}

// Close stops everything startRegions started, in reverse order: the
// replica-region app first (nothing forwards any more), then the executor
// link, the primary-region app and its executor, and the cluster, which
// also closes the replication link and removes its directories. It is safe
// on a partly started deployment.
func (r *regions) Close() error {
	errs := []error{r.replica.close(), r.near.close()}
	for _, l := range []*pgtest.Link{r.executorLink, r.nearExecutorLink} {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	errs = append(errs, r.primary.close())
	if r.served != nil {
		<-r.served // plugin.Close above ended Serve
		if r.serveErr != nil {
			errs = append(errs, fmt.Errorf("executor: %w", r.serveErr))
		}
	}
	if r.cluster != nil {
		errs = append(errs, r.cluster.Close())
	}
	return errors.Join(errs...)
}
