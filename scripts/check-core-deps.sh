#!/usr/bin/env bash
# The core stays light: a fresh app that imports only github.com/flypg/flypg
# links neither Prometheus nor OpenTelemetry (their adapters live in
# flypgprom and flypgotel), nor the benchmark harness's plotting or peers,
# and its module graph holds neither gonum.org/v1/plot nor
# gorm.io/plugin/dbresolver (the harness is a module of its own).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
app=$(mktemp -d)
trap 'rm -rf "$app"' EXIT

cat >"$app/go.mod" <<EOF
module example.com/freshapp

go 1.26.0

require github.com/flypg/flypg v0.0.0

replace github.com/flypg/flypg => $root
EOF
cat >"$app/main.go" <<'EOF'
package main

import "github.com/flypg/flypg"

func main() { _ = flypg.New(flypg.Config{}) }
EOF

cd "$app"
export GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=mod"
go mod tidy
deps=$(go list -deps .)
mods=$(go list -m all)
bad=$(grep -E '^(github\.com/prometheus/|go\.opentelemetry\.io/|gonum\.org/|gorm\.io/plugin/dbresolver)' <<<"$deps" || true)
if [ -n "$bad" ]; then
  echo "an app importing only github.com/flypg/flypg links:" >&2
  echo "$bad" >&2
  exit 1
fi
bad=$(grep -E '^(gonum\.org/v1/plot|gorm\.io/plugin/dbresolver) ' <<<"$mods" || true)
if [ -n "$bad" ]; then
  echo "an app importing github.com/flypg/flypg has in its module graph:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "core: $(wc -l <<<"$deps") packages linked, no Prometheus, OpenTelemetry, gonum or dbresolver"
