#!/usr/bin/env bash
# The bundled model (audiodiff/assets/models/storm-tiny-pool): the commands that trained it, in
# order, each stage starting from an export of an earlier one. Run from the repository root, with the
# training pool in data/pool/{clean,noise,rir} (recipes/pool/README.md says how to build one from public
# corpora; the bundled model's own pool is described there). On the 2-core CPU the seven stages took about 4 h 55 min
# (steps/s in recipes/pool/README.md). Stages 1 and 3 were stopped by hand; their learning rate is
# constant and each batch depends on the step alone, so max_steps=N gives the same weights.
set -euo pipefail

# 1. Joint StoRM training (predictor and score network together): 500 steps.
audiodiff train recipes/pool/storm_tiny.yaml train.init_predictor=null train.freeze_predictor=false \
    train.max_steps=500 output=runs/bundled
audiodiff export runs/bundled/checkpoints/last.ckpt -o runs/bundled/model_last

# 2. The predictor alone on the MSE, from stage 1's predictor: 3,600 steps at lr 1e-3. The run
#    exports its best validation checkpoint (step 3,000) to runs/pool_predictive_tiny/model.
audiodiff train recipes/pool/predictive_tiny.yaml train.init_predictor=runs/bundled/model_last
audiodiff export runs/pool_predictive_tiny/checkpoints/last.ckpt -o runs/pool_predictive_tiny/model_last

# 3. The score network around stage 2's best predictor, frozen: 750 steps.
audiodiff train recipes/pool/storm_tiny.yaml train.max_steps=750 train.val_every_n_steps=250
audiodiff export runs/pool_storm_tiny/checkpoints/last.ckpt -o runs/pool_storm_tiny/model_last

# 4. The predictor again, from stage 2's last weights: 4,800 steps, lr 5e-4 falling to 1e-5.
audiodiff train recipes/pool/predictive_tiny.yaml train.init_predictor=runs/pool_predictive_tiny/model_last \
    train.max_steps=4800 train.lr=5e-4 train.lr_final=1e-5 output=runs/pool_predictive_tiny_decay
audiodiff export runs/pool_predictive_tiny_decay/checkpoints/last.ckpt \
    -o runs/pool_predictive_tiny_decay/model_last

# 5. The score network of stage 3 goes on around stage 4's predictor, frozen: 400 steps, lr 1e-3
#    falling to 1e-5.
audiodiff train recipes/pool/storm_tiny.yaml train.init_model=runs/pool_storm_tiny/model_last \
    train.init_predictor=runs/pool_predictive_tiny_decay/model_last train.max_steps=400 \
    train.lr_final=1e-5 train.val_every_n_steps=200 output=runs/pool_storm_tiny_b

# Stage 5's float16 export: the model shipped before stages 6 and 7 (the two later stages started
# from this copy, as the full-precision stage 4 and 5 folders were gone by then).
audiodiff export runs/pool_storm_tiny_b/checkpoints/last.ckpt -o runs/pool_storm_tiny_b/model_fp16 --fp16

# 6. The predictor again, from stage 5's float16 copy (its predictor is stage 4's last weights):
#    6,500 steps, lr 3e-4 falling to 1e-5.
audiodiff train recipes/pool/predictive_tiny.yaml \
    train.init_predictor=runs/pool_storm_tiny_b/model_fp16 train.max_steps=6500 \
    train.lr=3e-4 train.lr_final=1e-5 train.val_every_n_steps=1000 \
    output=runs/pool_predictive_tiny_decay2
audiodiff export runs/pool_predictive_tiny_decay2/checkpoints/last.ckpt \
    -o runs/pool_predictive_tiny_decay2/model_last

# 7. The score network of stage 5 goes on around stage 6's predictor, frozen: 400 steps, lr 1e-3
#    falling to 1e-5.
audiodiff train recipes/pool/storm_tiny.yaml train.init_model=runs/pool_storm_tiny_b/model_fp16 \
    train.init_predictor=runs/pool_predictive_tiny_decay2/model_last train.max_steps=400 \
    train.lr_final=1e-5 train.val_every_n_steps=200 output=runs/pool_storm_tiny_c

# The package's copy (this overwrites the shipped one): float16, predictive mode by default, and
# 30 reverse steps for --mode storm.
audiodiff export runs/pool_storm_tiny_c/checkpoints/last.ckpt \
    -o audiodiff/assets/models/storm-tiny-pool --fp16 --sampler mode=predictive steps=30
