"""``ray job submit`` entrypoint for data preparation; the same flags as ``steam-ray data prepare``.

ray job submit --working-dir . -- python jobs/prepare_data.py --config cluster
"""

import sys

from steam_ray.cli import app

if __name__ == "__main__":
    app(["data", "prepare", *sys.argv[1:]])
