#!/usr/bin/env bash
# Train on a GPU machine that has torch but no network and no ../shared: the repository arrives
# with .devdata/ (scripts/gpu/make_subset.py) and .whl/ (pip download --no-deps monai nibabel).
#
#   bash scripts/gpu/train_offline.sh OUT_DIR [mridenoise train options ...]
#
# Installs the wheels into a temporary folder, stands in for SimpleITK when it is missing (training
# reads NIfTI with nibabel and never calls it), trains from the bundled weights on .devdata into
# RUN_DIR (default runs/gpu, ignored by git), and copies the run's files to OUT_DIR when it ends,
# also when it fails: log, config, best weights with their sha256, and the checkpoint. With
# --time-limit MINUTES the run stops in time, validated and checkpointed; run the same command
# again while the machine still holds RUN_DIR and it carries on from there.
set -euo pipefail
out=${1:?usage: train_offline.sh OUT_DIR [train options]}
shift
run=${RUN_DIR:-runs/gpu}
mkdir -p "$out"
copy_back() {
  for file in log.jsonl config.json best.pt best.pt.sha256 checkpoint.pt; do
    if [ -f "$run/$file" ]; then cp "$run/$file" "$out/"; fi
  done
}
trap copy_back EXIT
site=$(mktemp -d)
pip install --quiet --no-index --no-deps --target "$site" .whl/*.whl
if ! python -c "import SimpleITK" 2>/dev/null; then
  echo '"""Stand-in: importable, never called while training."""' > "$site/SimpleITK.py"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -m MRIDenoiseLib.cli train .devdata "$run" --warm-start --device "${DEVICE:-cuda}" --quiet "$@"
