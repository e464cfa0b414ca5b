package flypg_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
	"github.com/flypg/flypg/lsn"
	"github.com/flypg/flypg/pgtest"
)

type Account struct {
	ID      uint
	Owner   string
	Balance int64
}

// Two regions in one process: a primary-region node, whose GORM runs on
// the primary and which serves the executor, and a replica-region node,
// whose GORM runs on its replica and whose writes are forwarded. The
// database pair comes from package pgtest (a primary and a streaming
// replica on this machine); in production each node is an instance of the
// same app, configured from its environment (see Example_fromEnv).
func Example() {
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx, pgtest.Options{Replicas: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	const secret = "example-secret-0123456789abcdef" // FLYPG_SECRET: the same on every node

	// The primary region, iad. Nothing is forwarded here; the node serves
	// the executor that runs the other regions' writes.
	iadDB, err := gorm.Open(postgres.Open(cluster.Primary.DSN("")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		log.Fatal(err)
	}
	iad := flypg.New(flypg.Config{Region: "iad", PrimaryRegion: "iad", Secret: secret})
	if err := iadDB.Use(iad); err != nil {
		log.Fatal(err)
	}
	defer iad.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0") // any free port here; in production the configured one
	if err != nil {
		log.Fatal(err)
	}
	if err := iad.Start(lis); err != nil {
		log.Fatal(err)
	}
	// Migrations run in the primary region, locally.
	if err := iadDB.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&Account{}); err != nil {
		log.Fatal(err)
	}

	// A replica region, syd: GORM on its replica, writes to iad's executor.
	sydDB, err := gorm.Open(postgres.Open(cluster.Replicas[0].DSN("")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		log.Fatal(err)
	}
	syd := flypg.New(flypg.Config{Region: "syd", PrimaryRegion: "iad", Secret: secret, PrimaryAddr: lis.Addr().String()})
	if err := sydDB.Use(syd); err != nil {
		log.Fatal(err)
	}
	defer syd.Close()

	acct := Account{Owner: "ada", Balance: 100}
	if err := sydDB.WithContext(ctx).Create(&acct).Error; err != nil { // forwarded to iad, then waits for syd's replica
		log.Fatal(err)
	}
	var got Account
	sydDB.First(&got, acct.ID) // served by syd's replica, and sees the write
	fmt.Println(got.Owner, got.Balance)
	// Output: ada 100
}

// The adoption in an app deployed to every region: GORM on the local
// database as before, the plugin configured from the environment, and the
// node's gRPC service (the executor, in the primary region) on the
// configured port, FLYPG_PORT.
func Example_fromEnv() {
	// FLY_REGION, PRIMARY_REGION, FLY_APP_NAME, FLYPG_SECRET, FLYPG_PORT...
	cfg := flypg.ConfigFromEnv()
	// The region's own database: the primary in the primary region, else
	// the region's replica.
	url, err := flypg.ConfigureURL(os.Getenv("DATABASE_URL"), flypg.URLConfig{
		Region: cfg.Region, PrimaryRegion: cfg.PrimaryRegion, Production: cfg.AppName != "",
	})
	if err != nil {
		log.Fatal(err)
	}
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	plugin := flypg.New(cfg)
	if err := db.Use(plugin); err != nil {
		log.Fatal(err) // a bad configuration is reported here
	}
	defer plugin.Close()

	lis, err := net.Listen("tcp", fmt.Sprintf(":%d", plugin.Config().Port))
	if err != nil {
		log.Fatal(err)
	}
	if err := plugin.Start(lis); err != nil {
		log.Fatal(err)
	}

	// Migrations run on the local database in the primary region.
	if fly.IsPrimary() {
		db.Session(&gorm.Session{Context: fly.Local(context.Background())}).AutoMigrate(&Account{})
	}
}

// Writes whose result the caller will not read right away can skip the
// wait for replication.
func Example_noAwait() {
	_, db := twoRegionDBs() // a replica region's *gorm.DB with the plugin installed (see Example)
	ctx := fly.NoAwait(context.Background())
	err := db.WithContext(ctx).Create(&Account{Owner: "audit"}).Error // forwarded; returns once committed on the primary
	fmt.Println(err)
	// Output: <nil>
}

type transfer struct {
	From, To uint
	Amount   int64
}

// transferMoney runs on the primary, in one transaction: an error rolls
// it back.
func transferMoney(ctx context.Context, tx *gorm.DB, in transfer) (int64, error) {
	if err := tx.Model(&Account{}).Where("id = ?", in.From).Update("balance", gorm.Expr("balance - ?", in.Amount)).Error; err != nil {
		return 0, err
	}
	var to Account
	if err := tx.Model(&to).Where("id = ?", in.To).Update("balance", gorm.Expr("balance + ?", in.Amount)).Error; err != nil {
		return 0, err
	}
	err := tx.First(&to, in.To).Error
	return to.Balance, err
}

// A function registered on every node runs on the primary in one
// transaction and one round trip, however many statements it makes. Its
// handle's Call is typed both ways.
func ExampleRegister() {
	iadDB, sydDB := twoRegionDBs() // a primary-region and a replica-region *gorm.DB with the plugin installed (see Example)
	// At start-up, on every node of every region:
	var transferFn flypg.Function[transfer, int64]
	for _, db := range []*gorm.DB{iadDB, sydDB} {
		plugin, _ := flypg.FromDB(db)
		fn, err := flypg.Register(plugin, "transfer", transferMoney)
		if err != nil {
			log.Fatal(err)
		}
		transferFn = fn
	}

	// In a replica region: one round trip, then one wait for the replica.
	db, ctx := sydDB, context.Background()
	from, to := Account{Owner: "ada", Balance: 100}, Account{Owner: "grace", Balance: 0}
	db.Create(&from)
	db.Create(&to)
	balance, err := transferFn.Call(ctx, db, transfer{From: from.ID, To: to.ID, Amount: 25})
	if err != nil {
		log.Fatal(err)
	}
	db.First(&from, from.ID) // the local replica has replayed the transfer by now
	fmt.Println(balance, from.Balance)
	// Output: 25 75
}

// Statements the routing rules would misjudge — a function of your own
// that writes, called from a SELECT — can be routed by hand.
func ExampleUsePrimary() {
	_, db := twoRegionDBs() // a replica region's *gorm.DB with the plugin installed (see Example)
	// A migration of the primary region:
	//   CREATE SEQUENCE tickets;
	//   CREATE FUNCTION next_ticket_number() RETURNS bigint LANGUAGE sql AS 'SELECT nextval(''tickets'')';
	var next int64
	if err := db.Clauses(flypg.UsePrimary).Raw("SELECT next_ticket_number()").Scan(&next).Error; err != nil {
		log.Fatal(err)
	}
	fmt.Println(next)
	// Output: 1
}

// database/sql code next to GORM (sqlc, hand-written repositories) uses the
// plugin's *sql.DB: the same routing and the same waits as GORM's
// statements. The write is forwarded to the primary; the read that follows
// runs on the local replica and sees it.
func ExamplePlugin_DB() {
	_, db := twoRegionDBs() // a replica region's *gorm.DB with the plugin installed (see Example)
	plugin, _ := flypg.FromDB(db)
	sqlDB, err := plugin.DB()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := sqlDB.ExecContext(ctx, "INSERT INTO accounts (owner, balance) VALUES ($1, $2)", "katherine", 10); err != nil {
		log.Fatal(err)
	}
	var balance int64
	if err := sqlDB.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE owner = $1", "katherine").Scan(&balance); err != nil {
		log.Fatal(err)
	}
	fmt.Println(balance)
	// Output: 10
}

// What a caller does with a write's error: the two predicates tell a
// write that certainly did not run from one that certainly committed;
// neither holds for an outcome in doubt.
func ExampleCommitted() {
	handle := func(err error) string {
		switch {
		case err == nil:
			return "done"
		case flypg.Committed(err):
			return "committed (carry on, or read it on the primary)"
		case flypg.SafeToRetry(err):
			return "nothing ran: retry"
		case errors.Is(err, flypg.ErrInDoubt):
			return "may have committed: check before retrying"
		default:
			return "failed: " + err.Error()
		}
	}
	for _, err := range []error{
		nil,
		fmt.Errorf("save order: %w", &flypg.ReplicationError{LSN: 0x3A5F28, Err: lsn.ErrTimeout}),
		fmt.Errorf("save order: %w", &flypg.ForwardError{Op: "exec", Kind: flypg.ErrUnavailable, Err: errors.New("connection refused")}),
		fmt.Errorf("save order: %w", &flypg.ForwardError{Op: "exec", Kind: flypg.ErrInDoubt, Err: context.DeadlineExceeded}),
	} {
		fmt.Println(handle(err))
	}
	// Output:
	// done
	// committed (carry on, or read it on the primary)
	// nothing ran: retry
	// may have committed: check before retrying
}
