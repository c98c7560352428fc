#!/usr/bin/env bash
# A/B on a machine whose speed drifts by ±15 % between runs: one benchmark script of this
# working tree (synthesis_speed.py or term_speed.py) runs alternately against the package of an
# older commit (A) and of this working tree (B), REPEATS times each, one thread, one run at a time
# (start it with nothing else busy).
#   bash benchmarks/speed_ab.sh COMMIT TAG REPEATS SCRIPT [script arguments...]
# Each side runs from a folder beside this repository (../shared resolves the same); its JSON
# goes to benchmarks/results/speed_ab/TAG_{A,B}_<n>.json; the committed results are untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$1 tag=$2 repeats=$3 script=$4
shift 4
work=$(mktemp -d "$(cd .. && pwd)/speed-ab-XXXX")
trap 'git worktree remove --force "$work/A"; rm -rf "$work"' EXIT
git worktree add --force --detach "$work/A" "$commit" >/dev/null
mkdir -p "$work/B"
cp -r src "$work/B/"
out=benchmarks/results/speed_ab
mkdir -p "$out"
for n in $(seq 1 "$repeats"); do
  for side in A B; do
    bench="$work/bench-$side"
    rm -rf "$bench" && mkdir -p "$bench" && cp benchmarks/*.py "$bench/"
    echo "== $tag $side run $n ($([ "$side" = A ] && echo "$commit" || echo "working tree"))"
    OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTHONPATH="$work/$side/src" python "$bench/$script" "$@"
    cp "$bench"/results/*.json "$out/${tag}_${side}_$n.json"
  done
done
