#!/usr/bin/env bash
# Fill the infra cache (Kafka jars, FerretDB binary) before tests; `make test` calls this.
# Both fetches are independent, so run them in parallel; fail if either fails.
# Prints the Kafka libs dir and the FerretDB binary path (one line each).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

"$here/fetch-kafka.sh" &
kafka=$!
"$here/fetch-ferretdb.sh" &
ferretdb=$!

rc=0
wait "$kafka" || { echo "fetch-all: fetch-kafka.sh failed" >&2; rc=1; }
wait "$ferretdb" || { echo "fetch-all: fetch-ferretdb.sh failed" >&2; rc=1; }
exit "$rc"
