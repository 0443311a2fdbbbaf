"""The default run of ``relaxtorch gibbs`` (a copy lives in examples/gibbs.toml)."""

DEFAULT_TOML = '''\
# The default run of `relaxtorch gibbs`: well under two minutes on 2 CPU cores.
# Every key not given here takes its built-in default (see relaxtorch/jobs/gibbs/config.py).

# The graph: a builder spec ("ising:64x64,beta=0.4,h=0.1", "potts_all_pairs:8,D=4,beta=1.0,gamma=1.5"),
# a DeepDive/Numbskull binary folder ("deepdive:PATH"), or a [graph] table (builder = "ising_grid", n = 32, ...).
graph = "ising:32x32,beta=0.3,h=0.1"

[sweep]
samplers = ["gibbs", "async_gibbs", "poisson_gibbs"]
threads = [1, 2]          # for the threaded samplers (async_gibbs); the others run on one thread
seeds = [0]
epsilon = 0.02            # report the wall-clock time to reach this marginal error

[run]
sweeps = 2000             # sweeps per run (one sweep = one update per free variable), after burn_in
burn_in = 100
checkpoints = 20          # marginal error measured this many times per run (the curve's points)

[reference]
method = "auto"           # exact enumeration when small enough, else a long sequential Gibbs run
sweeps = 40000            # the long run's sweeps (method = "gibbs" or "auto" on a large graph)
'''
