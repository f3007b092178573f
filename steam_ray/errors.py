"""User-facing errors: the CLI prints these as one clear line (no traceback unless asked)."""


class SteamRayError(Exception):
    """A problem with the user's input or environment that they can fix (bad file, column...)."""


class DataError(SteamRayError):
    """Bad or missing input data: names the file, row or field at fault."""


class ConfigError(SteamRayError):
    """An invalid configuration value or combination."""
