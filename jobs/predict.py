"""``ray job submit`` entrypoint for batch predictions; the same flags as ``steam-ray predict``.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/predict.py --checkpoint best --registry gs://BUCKET/registry \
        --input gs://BUCKET/reviews/ --output gs://BUCKET/predictions

On a multi-node cluster a local ``--input``/``--output`` is refused unless ``--shared-fs`` (or
``STEAM_RAY_SHARED_FS``) says every node mounts it: use ``gs://``/``s3://`` there.
"""

import sys

from steam_ray.cli import run_job

if __name__ == "__main__":
    run_job(["predict", *sys.argv[1:]])
