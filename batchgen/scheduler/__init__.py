"""The scheduler's parts: the run's shared values (state.py) and its workers (cleanup.py).

`batchgen.runner.Runner` assembles them. Named `scheduler`, not `run`: a submodule
`batchgen.run` would shadow the public function `batchgen.run` once imported.
"""
