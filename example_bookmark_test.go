package flypg_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"

	"gorm.io/gorm"

	"github.com/flypg/flypg"
)

// A background job reads what the request that enqueued it wrote, in
// whatever region a worker picks it up: the request's bookmark travels in
// the job's payload.
func Example_jobHandOff() {
	type welcomeJob struct {
		AccountID uint           `json:"account_id"`
		Bookmark  flypg.Bookmark `json:"bookmark"` // text: safe in any queue
	}
	queue := make(chan []byte, 1)

	// In the request (under Middleware, or flypg.WithBookmark): write,
	// then enqueue with the session's bookmark.
	enqueue := func(ctx context.Context, db *gorm.DB) {
		a := Account{Owner: "ada"}
		if db != nil {
			if err := db.WithContext(ctx).Create(&a).Error; err != nil {
				log.Fatal(err)
			}
		}
		payload, err := json.Marshal(welcomeJob{AccountID: a.ID, Bookmark: flypg.BookmarkFrom(ctx)})
		if err != nil {
			log.Fatal(err)
		}
		queue <- payload
	}

	// In the worker: read under the job's bookmark. The read waits until
	// the local replica has the account (or runs on the primary).
	work := func(db *gorm.DB) {
		var job welcomeJob
		if err := json.Unmarshal(<-queue, &job); err != nil {
			log.Fatal(err)
		}
		ctx := flypg.WithBookmark(context.Background(), job.Bookmark)
		if db != nil {
			var a Account
			if err := db.WithContext(ctx).First(&a, job.AccountID).Error; err != nil {
				log.Fatal(err)
			}
		}
		fmt.Println("worker reads under", flypg.BookmarkFrom(ctx))
	}

	// The request arrived with a bookmark from an earlier write.
	b, err := flypg.ParseBookmark("1_65f2a1c08e1d2b3c.1.3000060.")
	if err != nil {
		log.Fatal(err)
	}
	var db *gorm.DB // the app's *gorm.DB with flypg installed; nil here
	enqueue(flypg.WithBookmark(context.Background(), b), db)
	work(db)
	// Output:
	// worker reads under 1_65f2a1c08e1d2b3c.1.3000060.
}

// Middleware carries the bookmark between a user's requests, whatever region
// serves each: the header Flypg-Bookmark (for API clients, which send back
// the one they received) or the cookie flypg_bookmark (for browsers).
func ExamplePlugin_Middleware() {
	plugin := flypg.New(flypg.ConfigFromEnv())
	// db.Use(plugin) ...
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notes", func(w http.ResponseWriter, r *http.Request) {
		// Writes under r.Context() advance the request's bookmark; the
		// response carries it.
	})
	log.Fatal(http.ListenAndServe(":8080", plugin.Middleware(mux)))
}
