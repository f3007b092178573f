"""``ray job submit`` entrypoint for evaluation; the same flags as ``steam-ray evaluate``.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/evaluate.py --checkpoint best --registry gs://bucket/registry \
        --data gs://bucket/data --output gs://bucket/eval
"""

import sys

from steam_ray.cli import run_job

if __name__ == "__main__":
    run_job(["evaluate", *sys.argv[1:]])
