"""``ray job submit`` entrypoint for training; the same flags as ``steam-ray train``.

ray job submit --working-dir . -- python jobs/train.py --config cluster
"""

import sys

from steam_ray.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]])
