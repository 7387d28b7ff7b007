#!/usr/bin/env bash
# Refreshes the committed seed corpus fuzz/seeds/<t>/ from a (long) run's working corpus.
#
# For each target: the working corpus fuzz/corpus/<t> plus the current seeds go through
# `cargo fuzz cmin` (libFuzzer -merge=1: the smallest set of inputs with the same coverage),
# and the result replaces the minimized part of fuzz/seeds/<t>/. The hand-picked seeds
# (hand-*, written by make_seeds.py) are always kept; a minimized input with the same bytes as
# one of them is dropped. Run it after longrun.sh, then commit fuzz/seeds.
#
# Environment: FUZZ_TARGETS (subset, default all), FUZZ_SANITIZER (address | none; default
# address), FUZZ_NICE (default 19). Needs a built target dir (smoke.sh or cargo fuzz build).
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
SAN="${FUZZ_SANITIZER:-address}"
NICE="${FUZZ_NICE:-19}"
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${TARGETS[@]}"; do
    seeds="fuzz/seeds/$t"
    mkdir -p "$seeds" "$work/$t"
    [[ -d fuzz/corpus/$t ]] && find "fuzz/corpus/$t" -maxdepth 1 -type f -exec cp -t "$work/$t" {} +
    find "$seeds" -maxdepth 1 -type f -exec cp -t "$work/$t" {} +
    # cmin rewrites the directory it is given: only the scratch copy.
    nice -n "$NICE" cargo fuzz cmin --sanitizer "$SAN" "$t" "$work/$t" >"$work/$t.log" 2>&1 || {
        echo "update_seeds: cmin failed for $t:" >&2
        tail -n 20 "$work/$t.log" >&2
        exit 1
    }
    find "$seeds" -maxdepth 1 -type f ! -name 'hand-*' -delete
    declare -A hand=()
    for h in "$seeds"/hand-*; do
        [[ -f $h ]] && hand[$(sha1sum <"$h" | cut -d' ' -f1)]=1
    done
    for f in "$work/$t"/*; do
        [[ -f $f ]] || continue
        sum=$(sha1sum <"$f" | cut -d' ' -f1)
        [[ -n ${hand[$sum]:-} ]] && continue
        cp "$f" "$seeds/$sum"
    done
    unset hand
    echo "update_seeds: $t: $(find "$seeds" -type f | wc -l) files," \
        "$(find "$seeds" -type f -exec cat {} + | wc -c) bytes"
done
