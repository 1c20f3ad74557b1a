#!/usr/bin/env bash
# make fuzz: run every fuzz target in the module for FUZZTIME each (default 60s) and print a
# report listing the targets and their outcome. `go test -fuzz` takes one target per run, so
# targets run one after another. A crash leaves its input under the package's
# testdata/fuzz/<Target>/; commit it as a regression seed (plain `go test` replays it).
# FUZZ_ONLY=REGEX runs only the targets whose "package Target" matches.
# Exit status: 0 when every target ran its time without a failure, 1 otherwise.
set -uo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
LOG=${FUZZLOG:-$(mktemp -d "${TMPDIR:-/tmp}/coffer-fuzz.XXXXXX")}
mkdir -p "$LOG"

# Targets are found by name (func FuzzXxx(f *testing.F) in a _test.go file), which is much
# cheaper than compiling every test binary to ask `go test -list`.
mod=$("$GO" list -m)
targets=()
while IFS=: read -r file name; do
  dir=$(dirname "$file")
  targets+=("$mod/${dir#./} $name")
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/:func /:/' | sort)

if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, $FUZZTIME each; logs in $LOG"

failed=0
flaked=0
report=()
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  [[ -z ${FUZZ_ONLY:-} || "$pkg $name" =~ $FUZZ_ONLY ]] || continue
  short=${pkg#"$mod"/}
  log="$LOG/${short//\//_}.$name.log"
  corpus="./$short/testdata/fuzz/$name"
  [ "$short" = "$pkg" ] && corpus="./testdata/fuzz/$name"
  before=$(ls "$corpus" 2>/dev/null | sort)
  start=$(date +%s)
  if "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
    status=ok
  elif [ "$(ls "$corpus" 2>/dev/null | sort)" = "$before" ] &&
    grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input written' "$log"; then
    # Go 1.26's fuzz coordinator can report its own -fuzztime deadline as a failure
    # (golang/go#75804, fixed in Go 1.27): no input failed and none was written.
    status=ok*
    flaked=1
  else
    status=FAIL
    failed=1
  fi
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  line=$(printf '%-5s %-34s %-28s %5ss %10s execs' "$status" "$short" "$name" "$secs" "${execs:-?}")
  echo "$line"
  report+=("$line")
  if [ "$status" = FAIL ]; then
    sed -n '1,40p' "$log" | sed 's/^/    /'
  fi
done

echo
echo "fuzz report ($FUZZTIME per target):"
printf '%s\n' "${report[@]}"
if [ $flaked = 1 ]; then
  echo "ok*: the run ended with Go's fuzztime deadline race (golang/go#75804), no failing input"
fi
exit $failed
