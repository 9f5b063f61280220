"""The scheduler's parts: the run's shared state (state.py) and its workers, one loop each
(submit.py with admit.py and accept.py, poll.py, fetch.py, cleanup.py).

`batchgen.runner.Runner` assembles them into one `asyncio.TaskGroup`. Named `scheduler`,
not `run`: a submodule `batchgen.run` would shadow the public function `batchgen.run`
once imported.
"""
