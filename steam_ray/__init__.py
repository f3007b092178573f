"""steam_ray: distributed fine-tuning and serving of a Steam review sentiment classifier on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steam_ray")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
