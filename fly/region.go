package fly

import "os"

// LocalRegion is the region name used when the environment names none.
const LocalRegion = "local"

// Region returns the region this process runs in: FLY_REGION, then
// MY_REGION (for deployments outside Fly.io), else "local".
func Region() string {
	if r := os.Getenv("FLY_REGION"); r != "" {
		return r
	}
	if r := os.Getenv("MY_REGION"); r != "" {
		return r
	}
	return LocalRegion
}

// PrimaryRegion returns the region of the primary database: PRIMARY_REGION,
// else "local".
func PrimaryRegion() string {
	if r := os.Getenv("PRIMARY_REGION"); r != "" {
		return r
	}
	return LocalRegion
}

// IsPrimary reports whether this process runs in the primary region. Like the
// original fly_rpc it compares region names only; the database is not asked.
func IsPrimary() bool {
	return Region() == PrimaryRegion()
}

// AppName returns FLY_APP_NAME, or "" outside Fly.io. flypg uses it to build
// the default executor address <region>.<app>.internal.
func AppName() string {
	return os.Getenv("FLY_APP_NAME")
}
