#!/usr/bin/env bash
# Long fuzz run: every target for a fixed time, one Markdown table row per target.
#
# Unlike smoke.sh (a quick "still clean?" check for the suite), this is the recorded run of
# fuzz/RESULTS.md: it keeps going after a crashing target, and reports for each target the
# seconds (wall and CPU), executions, exec/s, coverage (libFuzzer's cov/ft on its DONE line), corpus size and
# crashes. It builds nothing: run `cargo fuzz build --sanitizer address` (or smoke.sh) first.
#
# Each target reads the working corpus fuzz/corpus/<t> (new inputs are written there) and the
# committed seeds fuzz/seeds/<t> (read-only).
#
# Environment:
#   FUZZ_SECONDS        seconds per target (default 1800)
#   FUZZ_SECONDS_<t>    seconds for target <t>, overriding FUZZ_SECONDS
#   FUZZ_JOBS           targets run at once (default 1)
#   FUZZ_TARGETS        space-separated subset, run in this order (default: all)
#   FUZZ_SANITIZER      address (default) | none
#   FUZZ_NICE           nice level of the runs (default 19)
# Output: fuzz/target/longrun/<t>.log and <t>.row; the table is printed at the end and written
# to fuzz/target/longrun/table.md. Exit status 1 if any target crashed or failed to run.
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
SAN="${FUZZ_SANITIZER:-address}"
JOBS="${FUZZ_JOBS:-1}"
NICE="${FUZZ_NICE:-19}"
OUT=fuzz/target/longrun
mkdir -p "$OUT"

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

secs_for() {
    local v="FUZZ_SECONDS_$1"
    echo "${!v:-${FUZZ_SECONDS:-1800}}"
}

run_one() {
    local t=$1 secs log row rc=0
    secs=$(secs_for "$t")
    log="$OUT/$t.log"
    row="$OUT/$t.row"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local dirs=("fuzz/corpus/$t")
    if [[ -d "fuzz/seeds/$t" ]]; then dirs+=("fuzz/seeds/$t"); fi
    local before
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    # Build first, outside the timed run: `cargo fuzz run` rebuilds what changed, and its
    # compile time would otherwise count in the row's CPU seconds.
    nice -n "$NICE" cargo fuzz build --sanitizer "$SAN" "$t" >"$OUT/$t.build.log" 2>&1 || rc=$?
    # -max_total_time bounds the run; the outer timeout only guards against a wedged process.
    # `time` gives the CPU seconds the run really got: on a shared machine far below its wall time.
    local TIMEFORMAT='%U %S'
    { time timeout $((secs + 600)) nice -n "$NICE" \
        cargo fuzz run --sanitizer "$SAN" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?; } 2>"$OUT/$t.cpu"
    local cpu
    cpu=$(awk '{ printf "%.0f", $1 + $2 }' "$OUT/$t.cpu" 2>/dev/null || echo "-")
    local after crashes runs took done_line cov ft corp eps
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || echo "-")
    took=$(grep -o 'runs in [0-9]* second' "$log" | tail -1 | grep -o '[0-9]*' || echo "-")
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse|INITED)' "$log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || echo "-")
    ft=$(grep -o 'ft: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || echo "-")
    corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' <<<"$done_line" | cut -d' ' -f2 || echo "-")
    eps="-"
    if [[ $runs =~ ^[0-9]+$ && $took =~ ^[0-9]+$ && $took -gt 0 ]]; then eps=$((runs / took)); fi
    local verdict=clean
    if [[ $rc -ne 0 || $crashes -gt 0 ]]; then verdict="FAIL rc=$rc, see $log"; fi
    echo "| $t | $secs | ${took} | ${cpu} | ${runs} | ${eps} | ${cov} | ${ft} | ${corp} | ${crashes} | ${verdict} |" >"$row"
    [[ $verdict == clean ]]
}

echo "longrun: ${#TARGETS[@]} targets, $JOBS at a time, sanitizer=$SAN, nice $NICE"
running=0
for t in "${TARGETS[@]}"; do
    if [[ $running -ge $JOBS ]]; then wait -n || true; running=$((running - 1)); fi
    rm -f "$OUT/$t.row"
    echo "longrun: $(date -u +%H:%M:%S) start $t ($(secs_for "$t")s)"
    run_one "$t" &
    running=$((running + 1))
done
wait || true

failed=0
{
    echo "| target | -max_total_time s | ran s | CPU s | executions | exec/s | cov | ft | corpus (files/bytes) | crashes | result |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for t in "${TARGETS[@]}"; do
        if [[ -s $OUT/$t.row ]]; then cat "$OUT/$t.row"; else echo "| $t | | | | | | | | | | FAIL no result |"; fi
    done
} | tee "$OUT/table.md"
if grep -q 'FAIL' "$OUT/table.md"; then failed=1; fi
exit $failed
