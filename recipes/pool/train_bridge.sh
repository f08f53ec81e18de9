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

# 2. (350 more steps, lr 5e-4 -> 1e-5, from stage 1's export) reached validation loss 0.00209 but
#    was not evaluated in time; it is not shipped and nothing starts from it.

# 3. From stage 1's export (the previously shipped weights): half of the examples at t = T
#    exactly, where x_t is the prior Ŷ the sampler starts from (train.t_end_prob), the network told the time of its input state (sampler.model_time), and
#    0.01 x the multi-scale spectral loss of x̂0. Scheduled for 2,400 steps (lr 2e-4 -> 1e-5);
#    step 600 scored best by PESQ of the bridge mode (N = 1) on 24 held-out pool validation
#    utterances (eval/pool_valid.py; steps 600 / 1,200 / 1,800 / 2,400: 1.594 / 1.587 / 1.572 /
#    1.571), so the run stops there (train.stop_step) on the same schedule.
audiodiff train recipes/pool/bridge_hat_tiny.yaml train.warm_start=null \
    train.init_model=runs/pool_bridge_hat_tiny/model_last train.max_steps=2400 train.stop_step=600 \
    train.lr=2e-4 train.lr_final=1e-5 train.spectral_weight=0.01 train.t_end_prob=0.5 \
    model.sampler.model_time=previous train.val_every_n_steps=600 \
    train.checkpoint_every_n_steps=100 train.num_workers=0 train.progress_bar=false \
    output=runs/pool_bridge_hat_tiny_stage3 --threads 1

# The package's copy, full precision (this overwrites the shipped one), with 1 bridge step
# (2 network passes) as its default: N = 1 scored as well as N = 3, 7 or 15.
audiodiff export runs/pool_bridge_hat_tiny_stage3/checkpoints/last.ckpt \
    -o audiodiff/assets/models/bridge-tiny-pool --sampler steps=1
