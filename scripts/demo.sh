#!/usr/bin/env bash
# `make demo`: a small real sweep end to end on the default database (rnm.db) of a fresh folder.
set -euo pipefail
dir="${1:-demo}"
rnm="$(pwd)/.venv/bin/rnm"
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
echo "demo folder: $(pwd)"
"$rnm" queue --envs InvertedPendulum,InvertedDoublePendulum --patterns 2:4,1:8 --seeds 2 --steps 6000 \
    --set start_steps=1000 --set eval_interval=1000 --set eval_episodes=5 --set hidden=64x64 \
    --set mask_interval=1000 --set checkpoint_interval=2000
"$rnm" run-workers -j 2
"$rnm" status
"$rnm" report --format markdown --out report.md --plots figures --last-k 3
"$rnm" report --format latex --out report.tex --last-k 3
cat report.md
echo "table: $(pwd)/report.md and $(pwd)/report.tex; figures: $(pwd)/figures/"
echo "database: $(pwd)/rnm.db; checkpoints: $(pwd)/rnm-artifacts/"
