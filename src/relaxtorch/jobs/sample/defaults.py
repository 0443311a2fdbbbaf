"""The default sweep of ``relaxtorch sample`` (a copy lives in examples/sample.toml)."""

DEFAULT_TOML = '''\
# The default sweep of `relaxtorch sample`: a few minutes on 2 CPU cores.
# Every key not given here takes its built-in default (see relaxtorch/jobs/sample/config.py);
# step sizes come from relaxtorch/jobs/sample/samplers.py (TUNED) unless set here.

[sweep]
problems = ["gaussian_2d", "linear_regression", "robust_regression"]
samplers = ["sgld", "sghmc", "amagold", "sgld_lp_vc", "sgld_lp_naive", "mh", "tunamh"]
precisions = ["fp32", "fixed8"]
seeds = [0]

[chain]
chains = 2
steps = 3000
burn_in = 500
batch_size = 32

[problems.robust_regression]   # Student-t regression (TunaMH's): the MH samplers run here
n = 5000
d = 5
'''
