package main

import (
	"database/sql"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// stdlibDB exposes a pgx pool as a *sql.DB for code that takes one.
func stdlibDB(p *pgxpool.Pool) *sql.DB { return stdlib.OpenDBFromPool(p) }
