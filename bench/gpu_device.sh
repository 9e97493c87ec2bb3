#!/usr/bin/env bash
# The one device call of bench/gpu_check.py, run in the repo root on a lent GPU machine:
#   run(command="bash bench/gpu_device.sh", carry=[".devcarry"], timeout_s=600)
# .devcarry/ is made here beforehand by `python bench/gpu_carry.py` (the machine has no package registry).
# Installs the carried wheels into /tmp/site (the image's torch, transformers, pandas... are used as they
# are), puts the repo on PYTHONPATH (`python -m adalora_search` is the `adalora-search` command), then
# runs every section; extra arguments go to gpu_check.py. Results: $OUT/gpu_check.json and .log.
set -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ADALORA_SEARCH_CACHE=/tmp/adalora_cache
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT" "$ADALORA_SEARCH_CACHE/models"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .devcarry/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.devcarry/site:$PWD
cp -r .devcarry/models/. "$ADALORA_SEARCH_CACHE/models/" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import adalora_search.cli, datasets, optuna, peft, pyarrow, torch, transformers as t
print('torch', torch.__version__, 'transformers', t.__version__, 'peft', peft.__version__, 'datasets',
      datasets.__version__, 'pyarrow', pyarrow.__version__, 'optuna', optuna.__version__)" || exit 1
python3 bench/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
