package flypg_test

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/internal/testkit"
	"github.com/flypg/flypg/pgtest"
)

// TestMain closes what the examples started. Without PostgreSQL (and
// outside CI, where it is required) the examples that need it are skipped,
// as pgtest.StartT skips tests.
func TestMain(m *testing.M) {
	flag.Parse()
	if _, err := pgtest.FindBinDir(); err != nil && os.Getenv("CI") != "true" {
		fmt.Fprintf(os.Stderr, "flypg: no PostgreSQL (%v): the examples that run one are skipped\n", err)
		flag.Set("test.skip", `^Example(|_noAwait|Register|UsePrimary|Plugin_DB)$`)
	}
	code := m.Run()
	examples.close()
	os.Exit(code)
}

// examples is the cluster the examples share, each on a database of its
// own, and what they started on it.
var examples exampleEnv

type exampleEnv struct {
	once    sync.Once
	cluster *pgtest.Cluster
	err     error

	mu      sync.Mutex
	n       int
	closers []func()
}

func (e *exampleEnv) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	if e.cluster != nil {
		e.cluster.Close()
	}
}

// exampleSchema is the primary region's migration for the examples.
const exampleSchema = `
CREATE SEQUENCE tickets;
CREATE FUNCTION next_ticket_number() RETURNS bigint LANGUAGE sql AS 'SELECT nextval(''tickets'')';
`

// twoRegionDBs returns the *gorm.DB of a primary-region node (iad), which
// serves the executor, and of a replica-region node (syd), each with the
// plugin installed, as Example builds them, on a fresh database with the
// examples' schema.
func twoRegionDBs() (iadDB, sydDB *gorm.DB) {
	ctx := context.Background()
	examples.once.Do(func() {
		examples.cluster, examples.err = pgtest.Start(ctx, pgtest.Options{Replicas: 1})
	})
	if examples.err != nil {
		log.Fatal(examples.err)
	}
	c := examples.cluster
	examples.mu.Lock()
	defer examples.mu.Unlock()
	examples.n++
	name := fmt.Sprintf("example%d", examples.n)
	open := func(dsn string) *gorm.DB {
		db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			log.Fatal(err)
		}
		examples.closers = append(examples.closers, func() {
			if s, err := db.DB(); err == nil {
				s.Close()
			}
		})
		return db
	}
	if err := open(c.Primary.DSN("")).Exec("CREATE DATABASE " + name).Error; err != nil {
		log.Fatal(err)
	}
	iadDB = open(c.Primary.DSN(name))
	local := iadDB.Session(&gorm.Session{Context: fly.Local(ctx)})
	if err := local.AutoMigrate(&Account{}); err != nil {
		log.Fatal(err)
	}
	if err := local.Exec(exampleSchema).Error; err != nil {
		log.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		log.Fatal(err)
	}

	const secret = testkit.Secret
	install := func(db *gorm.DB, cfg flypg.Config) *flypg.Plugin {
		p := flypg.New(cfg)
		if err := db.Use(p); err != nil {
			log.Fatal(err)
		}
		examples.closers = append(examples.closers, func() { p.Close() })
		return p
	}
	iad := install(iadDB, flypg.Config{Region: "iad", PrimaryRegion: "iad", Secret: secret})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	if err := iad.Start(lis); err != nil {
		log.Fatal(err)
	}
	sydDB = open(c.Replicas[0].DSN(name))
	install(sydDB, flypg.Config{Region: "syd", PrimaryRegion: "iad", Secret: secret, PrimaryAddr: lis.Addr().String()})
	return iadDB, sydDB
}
