"""``ray job submit`` entrypoint for data preparation; the same flags as ``steam-ray data prepare``.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/prepare_data.py --config cluster

On a multi-node cluster a local ``--output`` is refused unless ``--shared-fs`` (or
``STEAM_RAY_SHARED_FS``) says every node mounts it: use ``gs://``/``s3://`` there.
"""

import sys

from steam_ray.cli import run_job

if __name__ == "__main__":
    run_job(["data", "prepare", *sys.argv[1:]])
