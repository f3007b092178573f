"""``ray job submit`` entrypoint for sweeps; the same flags as ``steam-ray tune``.

ray job submit --working-dir . -- python jobs/tune.py --config cluster --output gs://BUCKET/sweeps/s1
ray job submit --working-dir . -- python jobs/tune.py --output gs://BUCKET/sweeps/s1 --resume
"""

import sys

from steam_ray.cli import run_job

if __name__ == "__main__":
    run_job(["tune", *sys.argv[1:]])
