#!/usr/bin/env bash
# Records the runs that the documentation's figures are drawn from. Each run trains in outputs/docs-runs/NAME
# with the CSV logger; its overrides, final metrics and logged scalars (small text files) are copied to
# docs/runs/NAME/, and `mkdocs build` draws the figures from them with ssl_lightning.plot (docs/hooks/figures.py).
#
#     bash docs/runs/record.sh                 # every run below, one after the other (~40 min on 2 CPU cores)
#     bash docs/runs/record.sh dino_digits     # one of them
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
SCRATCH=outputs/docs-runs

keep() {  # RUN_DIR DEST: the files a run's figures and summary are read from
  mkdir -p "$2/.hydra" "$2/csv"
  cp "$1/.hydra/overrides.yaml" "$2/.hydra/"
  cp "$1/metrics.json" "$2/"
  cp "$1/csv/metrics.csv" "$2/csv/"
}

record() {  # NAME OVERRIDES...: one run
  local name=$1; shift
  rm -rf "${SCRATCH:?}/$name" "docs/runs/$name"
  "$PYTHON" -m ssl_lightning.train logger=csv hydra.run.dir="$SCRATCH/$name" "$@"
  keep "$SCRATCH/$name" "docs/runs/$name"
}

record_sweep() {  # NAME OVERRIDES...: a -m sweep, its jobs kept as NAME/0, NAME/1, ...
  local name=$1; shift
  rm -rf "${SCRATCH:?}/$name" "docs/runs/$name"
  "$PYTHON" -m ssl_lightning.train -m logger=csv hydra.sweep.dir="$SCRATCH/$name" "$@"
  for job in "$SCRATCH/$name"/[0-9]*; do keep "$job" "docs/runs/$name/$(basename "$job")"; done
}

all=(default vicreg_digits dino_digits ibot_digits ijepa_digits moco_temperature)
for name in "${@:-${all[@]}}"; do
  case $name in
    default)          record default ;;  # python -m ssl_lightning.train: SimCLR, 40 epochs
    vicreg_digits)    record vicreg_digits experiment=vicreg_digits ;;
    dino_digits)      record dino_digits experiment=dino_digits ;;
    ibot_digits)      record ibot_digits experiment=ibot_digits ;;
    ijepa_digits)     record ijepa_digits experiment=ijepa_digits ;;
    moco_temperature) record_sweep moco_temperature experiment=moco_digits method.temperature=0.05,0.1,0.2,0.5 \
                        trainer.max_epochs=10 ;;
    *) echo "unknown run $name: one of ${all[*]}" >&2; exit 2 ;;
  esac
done
