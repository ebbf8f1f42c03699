#!/usr/bin/env bash
# The packages ditmeter needs that the lent GPU machines' image lacks (docs/gpu-check.md), as
# wheels in .whl/ (ignored by git), at the versions this checkout's .venv runs. The image holds
# torch, transformers, pandas, pyarrow, matplotlib, networkx, rich, attrs and PyYAML; it lacks
# Hydra, OmegaConf, ANTLR's runtime, diffusers and the official Wan code. Run here, once, after
# `make install`; then run(command="bash scripts/gpu_check.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
rm -rf .whl && mkdir -p .whl
pins=$("$PY" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("diffusers", "hydra-core", "omegaconf", "wan22")))
EOF
)
# shellcheck disable=SC2086  # one argument per pin
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .whl $pins
# ANTLR's runtime is published as a source archive only: built into a pure-Python wheel here.
"$PY" -m pip wheel --quiet --no-deps -w .whl "antlr4-python3-runtime==$("$PY" -c \
  'from importlib.metadata import version; print(version("antlr4-python3-runtime"))')"
ls -l .whl
