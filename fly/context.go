package fly

import "context"

type ctxKey int

const (
	noAwaitKey ctxKey = iota
	localKey
)

// NoAwait returns a context under which flypg still forwards writes to the
// primary but does not wait for the local replica to replay them. Use it for
// writes whose result the caller will not read back right away:
//
//	db.WithContext(fly.NoAwait(ctx)).Create(&event)
func NoAwait(ctx context.Context) context.Context {
	return context.WithValue(ctx, noAwaitKey, true)
}

// IsNoAwait reports whether ctx was marked with NoAwait.
func IsNoAwait(ctx context.Context) bool {
	v, _ := ctx.Value(noAwaitKey).(bool)
	return v
}

// Local returns a context under which flypg does nothing: every statement
// runs on the local database connection as if the plugin were not installed.
// It is the escape hatch for migrations and for tools that must talk to the
// local database directly:
//
//	db.Session(&gorm.Session{Context: fly.Local(ctx)}).AutoMigrate(&User{})
func Local(ctx context.Context) context.Context {
	return context.WithValue(ctx, localKey, true)
}

// IsLocal reports whether ctx was marked with Local.
func IsLocal(ctx context.Context) bool {
	v, _ := ctx.Value(localKey).(bool)
	return v
}
