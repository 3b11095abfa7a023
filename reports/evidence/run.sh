#!/usr/bin/env bash
# The evidence set: every task's comparison (the `command` of its config,
# src/qimia/conf/models/experiment/evidence/<task>.yaml), one after another, then the summary
# (qimia evidence -> reports/evidence/README.md). Finished runs are reused, interrupted ones resume.
#   QIMIA_DATA_DIR=<mnist-folder> bash reports/evidence/run.sh            # all tasks
#   QIMIA_DATA_DIR=... bash reports/evidence/run.sh classification transfer          # some
set -euo pipefail
: "${QIMIA_DATA_DIR:?set QIMIA_DATA_DIR=<mnist-folder>: real MNIST (classification, transfer, denoising)}"
export QIMIA_DATA_DIR
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(lm lm_long classification denoising transfer weight_sharing chunking denoising_mnist)

command_of() {  # the experiment's own command, without the data placeholder (QIMIA_DATA_DIR gives it)
  python -c "from qimia.app import compose; print(' '.join(compose('models/train', ['experiment=evidence/$1']).command.split()))" \
    | sed 's| paths.data=<mnist-folder>||'
}

for task in "${tasks[@]}"; do
  echo "[evidence] $task: start $(date -u +%H:%M:%S)"
  if [ "$task" = transfer ] && [ ! -f reports/evidence/transfer/base/checkpoints/last.ckpt ]; then
    qimia train experiment=transfer_base threads=2 trainer.enable_progress_bar=false hydra.run.dir=reports/evidence/transfer/base
  fi
  eval "$(command_of "$task")"
  echo "[evidence] $task: end $(date -u +%H:%M:%S)"
done
qimia evidence
