"""The quickstart as a script: the same flags as ``steam-ray quickstart``.

    python jobs/quickstart.py --workdir artifacts/quickstart

A laptop demo, not a cluster entrypoint: it writes to a local directory, so on a multi-node
cluster it stops with an error (use jobs/prepare_data.py, jobs/train.py, jobs/tune.py with
gs:// paths there).
"""

import sys

from steam_ray.cli import app

if __name__ == "__main__":
    # Not run_job: that leaves the working dir, and a relative --workdir is meant from here.
    app(["quickstart", *sys.argv[1:]])
