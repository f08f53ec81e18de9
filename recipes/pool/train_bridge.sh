#!/usr/bin/env bash
# The bridge model (audiodiff/assets/models/bridge-tiny-pool): a Schrödinger bridge from the
# predictor's estimate Ŷ, warm-started from the bundled storm-tiny-pool's predictor, which stays
# frozen (recipes/pool/bridge_hat_tiny.yaml; docs/bundled-model-bridge.md). The commands that
# trained it, in order, each stage starting from an export of an earlier one. Run from the
# repository root, with the training pool in data/pool/{clean,noise,rir} (README.md in this folder).
# On the 2-core CPU, one torch thread, shared with other jobs: about 0.35 steps/s.
set -euo pipefail

# 1. Warm start from storm-tiny-pool's predictor (time injections and the x_t / Ŷ input channels
#    zero, so the bridge mode starts equal to the predictive mode): 500 steps, lr 5e-4 -> 5e-5.
audiodiff train recipes/pool/bridge_hat_tiny.yaml train.progress_bar=false --threads 1
audiodiff export runs/pool_bridge_hat_tiny/checkpoints/last.ckpt -o runs/pool_bridge_hat_tiny/model_last

# The package's copy, full precision (this overwrites the shipped one). A stage 2 (350 more steps,
# lr 5e-4 -> 1e-5, from stage 1's export) reached validation loss 0.00209 but was not evaluated in
# time and is not shipped.
audiodiff export runs/pool_bridge_hat_tiny/checkpoints/last.ckpt -o audiodiff/assets/models/bridge-tiny-pool
