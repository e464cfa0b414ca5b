package flypg_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/flypg/flypg"
	"github.com/flypg/flypg/fly"
)

type Account struct {
	ID      uint
	Owner   string
	Balance int64
}

// The whole adoption: open GORM on the local database as before, install
// the plugin, serve the node's gRPC service. In the primary region nothing
// changes; elsewhere writes are forwarded and read-your-writes holds.
func Example() {
	cfg := flypg.ConfigFromEnv() // FLY_REGION, PRIMARY_REGION, FLY_APP_NAME, FLYPG_SECRET...
	db, err := gorm.Open(postgres.Open("postgres://app@localhost:5432/app"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	plugin := flypg.New(cfg)
	if err := db.Use(plugin); err != nil {
		log.Fatal(err) // a bad configuration is reported here
	}
	defer plugin.Close()

	lis, err := net.Listen("tcp", ":5480")
	if err != nil {
		log.Fatal(err)
	}
	go plugin.Serve(lis)

	ctx := context.Background()
	// Migrations run on the local database (the primary, in the primary
	// region), never forwarded.
	if fly.IsPrimary() {
		db.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&Account{})
	}

	acct := Account{Owner: "ada", Balance: 100}
	err = db.WithContext(ctx).Create(&acct).Error // forwarded, then waits for the replica
	if errors.Is(err, flypg.ErrReplicationTimeout) {
		// The account exists on the primary; this replica is just behind.
	}
	db.First(&acct, acct.ID) // served by the local replica, and sees the write
}

// Writes whose result the caller will not read right away can skip the
// wait for replication.
func Example_noAwait() {
	var db *gorm.DB // with the plugin installed
	ctx := fly.NoAwait(context.Background())
	db.WithContext(ctx).Create(&Account{Owner: "audit"})
}

type transfer struct {
	From, To uint
	Amount   int64
}

// A function registered on every node runs on the primary in one
// transaction and one round trip, however many statements it makes.
func ExampleCall() {
	var db *gorm.DB // with the plugin installed
	plugin, _ := flypg.FromDB(db)
	flypg.Register(plugin, "transfer", func(ctx context.Context, tx *gorm.DB, in transfer) (int64, error) {
		if err := tx.Model(&Account{}).Where("id = ?", in.From).Update("balance", gorm.Expr("balance - ?", in.Amount)).Error; err != nil {
			return 0, err
		}
		var to Account
		if err := tx.Model(&to).Where("id = ?", in.To).Update("balance", gorm.Expr("balance + ?", in.Amount)).Error; err != nil {
			return 0, err
		}
		err := tx.First(&to, in.To).Error
		return to.Balance, err
	})

	balance, err := flypg.Call[int64](context.Background(), db, "transfer", transfer{From: 1, To: 2, Amount: 25})
	if err != nil {
		log.Print(err)
	}
	_ = balance // the local replica has replayed the transfer by now
}

// Statements the routing rules would misjudge — a function of your own
// that writes — can be routed by hand.
func ExampleUsePrimary() {
	var db *gorm.DB // with the plugin installed
	var next int64
	db.Clauses(flypg.UsePrimary).Raw("SELECT next_ticket_number()").Scan(&next)
}

// database/sql code next to GORM (sqlc, hand-written repositories) uses the
// plugin's *sql.DB: the same routing and the same waits as GORM's
// statements. The write is forwarded to the primary; the read that follows
// runs on the local replica and sees it.
func ExamplePlugin_DB() {
	var db *gorm.DB // with the plugin installed
	plugin, _ := flypg.FromDB(db)
	sqlDB, err := plugin.DB()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := sqlDB.ExecContext(ctx, "INSERT INTO accounts (owner, balance) VALUES ($1, $2)", "grace", 10); err != nil {
		log.Fatal(err)
	}
	var balance int64
	if err := sqlDB.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE owner = $1", "grace").Scan(&balance); err != nil {
		log.Fatal(err)
	}
	fmt.Println(balance)
}
