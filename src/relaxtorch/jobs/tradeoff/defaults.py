"""The default sweep of ``relaxtorch tradeoff`` (a copy lives in examples/default.toml)."""

DEFAULT_TOML = '''\
# The default sweep of `relaxtorch tradeoff`: a few minutes on 2 CPU cores.
# Every key not given here takes its built-in default (see relaxtorch/tradeoff/config.py).

[sweep]
pairs = ["mlp/digits", "logreg/breast_cancer"]
algorithms = ["sgd", "swalp", "svrg", "halp"]   # svrg and halp run on logreg only (convex)
precisions = ["fp32", "bf16", "fp8_e4m3", "fixed8", "bfp8", "mxfp4"]
seeds = [0, 1, 2]

[train]                # the digits MLP: constant lr, SWALP averages the second half
epochs = 20
batch_size = 32
lr = 0.1
momentum = 0.9
weight_decay = 5e-4
lr_schedule = "constant"
swa_start = 0.5

[models.logreg]        # L2 logistic regression; HALP's mu is the L2 strength.  Minibatches of 8
epochs = 12            # keep it fast; examples/halp_logreg.toml uses single examples (the HALP paper's)
batch_size = 8
lr = 0.5
momentum = 0.0
weight_decay = 0.05
'''
