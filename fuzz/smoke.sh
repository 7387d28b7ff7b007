#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target and run each for a short, bounded time.
#
# Targets are discovered with `cargo fuzz list`, so every [[bin]] in fuzz/Cargo.toml is run,
# including ones other modules add later.
#
# Toolchain: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, sancov passes). This
# machine has the stable toolchain, so we set RUSTC_BOOTSTRAP=1, which lets stable rustc
# accept them. AddressSanitizer works that way (stable ships librustc-stable_rt.asan.a);
# if an ASan build ever fails we fall back to `--sanitizer none` (libFuzzer still finds
# panics, i.e. every parse bug that matters in safe Rust) and say so.
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 15)
#   FUZZ_JOBS       targets run at once (default: nproc)
#   FUZZ_SANITIZER  force a sanitizer (address | none); default: address, else none
#   FUZZ_TARGETS    space-separated subset of targets (default: all)
#   FUZZ_TOOLCHAIN  e.g. "+nightly" to use a real nightly instead of RUSTC_BOOTSTRAP
# Exit status: 0 if every target ran clean, 1 if any crashed or failed to build/run.
set -euo pipefail

cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

fuzz() {
    # shellcheck disable=SC2086
    cargo $TOOLCHAIN fuzz "$@"
}

if [[ -n "${FUZZ_SANITIZER:-}" ]]; then
    SAN="$FUZZ_SANITIZER"
    fuzz build --sanitizer "$SAN"
elif fuzz build --sanitizer address; then
    SAN=address
else
    echo "smoke: AddressSanitizer build failed; falling back to --sanitizer none" >&2
    SAN=none
    fuzz build --sanitizer none
fi

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(fuzz list)
fi
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    echo "smoke: no fuzz targets found" >&2
    exit 1
fi

# Targets run FUZZ_JOBS at a time (default: one per core): each libFuzzer run is single-threaded
# and bounded by -max_total_time, so on CI's 2 cores two at a time halve the step's wall time.
JOBS="${FUZZ_JOBS:-$(nproc)}"
echo "smoke: ${#TARGETS[@]} targets, ${FUZZ_SECONDS}s each, $JOBS at a time, sanitizer=$SAN"
run_one() { # target -> exit status; its verdict lines go to fuzz/target/smoke-<t>.verdict
    local t=$1 log="fuzz/target/smoke-$1.log" out="fuzz/target/smoke-$1.verdict"
    mkdir -p "fuzz/corpus/$t"
    # Working corpus first (libFuzzer writes new inputs only there), then the committed seeds,
    # read-only: a fresh checkout starts from real formats instead of empty input.
    local dirs=("fuzz/corpus/$t")
    if [[ -d "fuzz/seeds/$t" ]]; then dirs+=("fuzz/seeds/$t"); fi
    # The outer timeout only guards against a wedged process; libFuzzer stops itself.
    if timeout $((FUZZ_SECONDS + 300)) \
        cargo $TOOLCHAIN fuzz run --sanitizer "$SAN" "$t" "${dirs[@]}" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
        echo "smoke: ok    $t ($(grep -o 'Done [0-9]* runs' "$log" | tail -1))" >"$out"
        return 0
    else
        { echo "smoke: FAIL  $t (log: $log; artifacts: fuzz/artifacts/$t/)"
          tail -n 30 "$log" | sed 's/^/    /'; } >"$out"
        return 1
    fi
}
running=0
for t in "${TARGETS[@]}"; do
    if [[ $running -ge $JOBS ]]; then wait -n || true; running=$((running - 1)); fi
    rm -f "fuzz/target/smoke-$t.verdict"
    run_one "$t" &
    running=$((running + 1))
done
wait
# Verdicts in the targets' order; a target without one (killed) counts as failed.
failed=()
for t in "${TARGETS[@]}"; do
    v="fuzz/target/smoke-$t.verdict"
    if [[ -s $v ]]; then cat "$v"; else echo "smoke: FAIL  $t (no verdict)"; fi
    grep -q '^smoke: ok ' "$v" 2>/dev/null || failed+=("$t")
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "smoke: ${#failed[@]} target(s) failed: ${failed[*]}"
    exit 1
fi
echo "smoke: all ${#TARGETS[@]} targets passed"
