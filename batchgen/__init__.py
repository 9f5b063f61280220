"""batchgen: run Akool image-to-video jobs in bulk from YAML manifests.

The package is organised as a one-way pipeline (see README "Design"):
manifest -> jobs/pricing -> store -> runner -> client -> download -> report.
Nothing is created at import time.
"""

__version__ = "0.1.0"
