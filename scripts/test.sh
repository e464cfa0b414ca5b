#!/usr/bin/env bash
# flypg's whole test run, as the README gives it and CI runs it:
# PostgreSQL set-up if missing, formatting, vet, staticcheck and tidiness of
# both modules (the library and the benchmark harness, integration/bench,
# joined by go.work), the light-core check, and the race-enabled tests,
# including the integration tests against a real primary and replica.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh

# The benchmark harness is a module of its own: `./...` stops at its
# go.mod, so it is named explicitly.
modules=(./... ./integration/bench/...)

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go mod tidy"
go mod tidy -diff
(cd integration/bench && go mod tidy -diff)

echo "== go vet"
go vet "${modules[@]}"

echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 "${modules[@]}"

echo "== light core"
scripts/check-core-deps.sh

echo "== go test -race"
go test -race -count=1 -timeout 12m "$@" ./...

echo "== fuzz (a few seconds per target)"
# Each target starts past authentication (see forward/fuzz_security_test.go);
# one worker, since each starts its own PostgreSQL. Budgets are counts of
# executions, not durations: Go 1.26's fuzzing coordinator can fail a target
# with "context deadline exceeded" when a duration ends mid-execution (fixed
# in Go 1.27).
for target in ./forward/:FuzzAuthenticate:2000 ./forward/:FuzzSessionSequence:200 ./forward/:FuzzTxSequence:300 \
  ./forward/:FuzzArgBinding:1000 ./forward/executor/:FuzzExecRequest:5000; do
  IFS=: read -r pkg name runs <<<"$target"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "${FUZZTIME:-${runs}x}" -fuzzminimizetime 10x -parallel 1 "$pkg"
done

echo "== demo self-test"
go run ./examples/demo -selftest
