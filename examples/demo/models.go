package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/flypg/flypg"
)

// List is a to-do list. Deleting it deletes its items (the foreign key
// cascades), so a delete is one statement and one round trip to the
// primary region.
type List struct {
	ID        uint      `json:"id"`
	Name      string    `json:"name" gorm:"not null"`
	Items     []Item    `json:"items,omitempty" gorm:"constraint:OnDelete:CASCADE"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Item is an entry of a List.
type Item struct {
	ID        uint      `json:"id"`
	ListID    uint      `json:"list_id" gorm:"not null;index"`
	Title     string    `json:"title" gorm:"not null"`
	Done      bool      `json:"done" gorm:"not null"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// listSummary is a row of GET /lists: a list without its items, with
// counts computed by the (local) database.
type listSummary struct {
	ID        uint      `json:"id"`
	Name      string    `json:"name"`
	Items     int64     `json:"items"`
	Done      int64     `json:"done"`
	UpdatedAt time.Time `json:"updated_at"`
}

// allModels are the models migrated, in the primary region only, at start.
func allModels() []any { return []any{&List{}, &Item{}, &Note{}} }

// moveItemFunc names the registered function behind POST /items/{id}/move.
const moveItemFunc = "move-item"

// moveInput and moveResult travel as JSON between the regions.
type moveInput struct {
	ItemID   uint `json:"item_id"`
	ToListID uint `json:"to_list_id"`
}

type moveResult struct {
	Item     Item `json:"item"`
	FromList uint `json:"from_list"`
}

// Codes moveItem fails with (flypg.NewCallError), which the handler turns
// into 404s.
const (
	codeItemNotFound = "item_not_found"
	codeListNotFound = "list_not_found"
)

// moveItemFn calls moveItem, typed both ways.
var moveItemFn = flypg.Declare[moveInput, moveResult](moveItemFunc)

// registerFunctions registers the app's functions on a node's plugin.
// Every node registers the same functions: a call runs them wherever it
// lands, which for the primary region's executor is the primary.
func registerFunctions(p *flypg.Plugin) error {
	if _, err := flypg.Register(p, moveItemFunc, moveItem); err != nil {
		return fmt.Errorf("register %s: %w", moveItemFunc, err)
	}
	return nil
}

// moveItem moves an item to another list. It runs on the primary, in one
// transaction: the item is locked, the target list checked and both
// lists' updated_at touched atomically.
//
// Why a registered function: the same steps written as a GORM transaction
// in the replica region would be forwarded statement by statement, one
// cross-region round trip each (four here). A call ships the whole
// function in one round trip and then waits once for replication.
func moveItem(ctx context.Context, tx *gorm.DB, in moveInput) (moveResult, error) {
	var item Item
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&item, in.ItemID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return moveResult{}, flypg.NewCallError(codeItemNotFound, fmt.Sprintf("item %d not found", in.ItemID))
	}
	if err != nil {
		return moveResult{}, fmt.Errorf("lock item %d: %w", in.ItemID, err)
	}
	// FOR SHARE: the target list cannot be deleted until we commit.
	var to List
	err = tx.Clauses(clause.Locking{Strength: "SHARE"}).Select("id").First(&to, in.ToListID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return moveResult{}, flypg.NewCallError(codeListNotFound, fmt.Sprintf("list %d not found", in.ToListID))
	}
	if err != nil {
		return moveResult{}, fmt.Errorf("lock list %d: %w", in.ToListID, err)
	}
	from := item.ListID
	if from == to.ID {
		return moveResult{Item: item, FromList: from}, nil
	}
	now := tx.NowFunc()
	err = tx.Model(&Item{}).Where("id = ?", item.ID).
		Updates(map[string]any{"list_id": to.ID, "updated_at": now}).Error
	if err != nil {
		return moveResult{}, fmt.Errorf("move item %d: %w", item.ID, err)
	}
	err = tx.Model(&List{}).Where("id IN ?", []uint{from, to.ID}).Update("updated_at", now).Error
	if err != nil {
		return moveResult{}, fmt.Errorf("touch lists %d and %d: %w", from, to.ID, err)
	}
	item.ListID, item.UpdatedAt = to.ID, now
	return moveResult{Item: item, FromList: from}, nil
}
