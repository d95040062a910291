#!/usr/bin/env bash
# Train on a GPU machine that has torch but no network and no ../shared: the repository arrives
# with .devdata/ (scripts/gpu/make_subset.py) and .whl/ (pip download --no-deps monai nibabel).
#
#   bash scripts/gpu/train_offline.sh OUT_DIR [mridenoise train options ...]
#
# Installs the wheels into a temporary folder, stands in for SimpleITK when it is missing (training
# reads NIfTI with nibabel and never calls it), trains from the bundled weights on .devdata, and
# leaves the run's small files in OUT_DIR (log, config, best weights with their sha256; not the
# checkpoint, which is large).
set -euo pipefail
out=${1:?usage: train_offline.sh OUT_DIR [train options]}
shift
site=$(mktemp -d)
pip install --quiet --no-index --no-deps --target "$site" .whl/*.whl
if ! python -c "import SimpleITK" 2>/dev/null; then
  echo '"""Stand-in: importable, never called while training."""' > "$site/SimpleITK.py"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
run=$(mktemp -d)/run
python -m MRIDenoiseLib.cli train .devdata "$run" --warm-start --device "${DEVICE:-cuda}" --quiet "$@"
mkdir -p "$out"
cp "$run"/log.jsonl "$run"/config.json "$run"/best.pt "$run"/best.pt.sha256 "$out"/
