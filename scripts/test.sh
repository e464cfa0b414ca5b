#!/usr/bin/env bash
# flypg's whole test run, as the README gives it and CI runs it:
# PostgreSQL set-up if missing, formatting, vet, and the race-enabled tests,
# including the integration tests against a real primary and replica.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

echo "== go test -race"
go test -race -count=1 -timeout 12m "$@" ./...

echo "== demo self-test"
go run ./examples/demo -selftest
