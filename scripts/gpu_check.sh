#!/usr/bin/env bash
# Run scripts/gpu_check.py on a machine with one NVIDIA GPU and no network (see docs/results/gpu.md).
#
#   scripts/gpu_check.sh OUT_DIR [gpu_check.py options...]
#
# If .whl/ holds wheels (trl, datasets, dill, multiprocess: the GPU image lacks them), they are installed offline
# into a private folder first; dipo itself is used from src/ without installing. Download the wheels on a networked
# machine with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl trl==1.16.0 datasets==4.7.0 dill==0.4.1 multiprocess==0.70.19
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_results}"
shift || true
python="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" > /dev/null; then
  site="${DIPO_WHEEL_SITE:-/tmp/dipo-gpu-site}"
  "$python" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$python" -c "import torch, transformers, trl, datasets; print('gpu_check.sh: torch', torch.__version__, \
'| transformers', transformers.__version__, '| trl', trl.__version__, '| datasets', datasets.__version__, \
'| cuda', torch.cuda.is_available())"
exec "$python" scripts/gpu_check.py --out "$out" "$@"
