#!/usr/bin/env bash
# The streaming default model (audiodiff/assets/models/causal-pool): the commands that trained and
# shipped it. Run from the repository root with the training pool in data/pool/{clean,noise,rir}
# (README.md here says how to build one), or set POOL=DIR. One process, one torch thread, no data
# worker. The run was stopped by hand at step STEPS below; its learning rate is constant and each
# batch depends on the step alone, so max_steps=STEPS gives the same weights.
set -euo pipefail
POOL=${POOL:-data/pool}
STEPS=${STEPS:-3750}

OMP_NUM_THREADS=1 audiodiff train recipes/pool/predictive_causal.yaml \
    data.clean="$POOL/clean" data.noise="$POOL/noise" data.rir="$POOL/rir" \
    train.max_steps="$STEPS" train.progress_bar=false

# The package's copy, full precision (0.7 MB): the weights a later run goes on from with
# train.init_model=audiodiff/assets/models/causal-pool. The pool folders recorded in its config
# are set back to the recipe's data/pool/... (the user's folders are theirs to choose).
audiodiff export "runs/pool_predictive_causal/checkpoints/best-step=$STEPS.ckpt" -o audiodiff/assets/models/causal-pool
python - <<'PY'
import json, pathlib
path = pathlib.Path("audiodiff/assets/models/causal-pool/config.json")
document = json.loads(path.read_text())
data = document["training"]["recipe"]["data"]
data.update(clean="data/pool/clean", noise="data/pool/noise", rir="data/pool/rir")
path.write_text(json.dumps(document, indent=2) + "\n")
PY
