"""pytest's warning filters (pyproject.toml): our DeprecationWarnings fail, listed
third-party packages' own ones are quiet."""

from __future__ import annotations

import warnings

import pytest


def _warn_from(module: str) -> None:
    warnings.warn_explicit(
        "old API",
        DeprecationWarning,
        filename=f"{module.replace('.', '/')}.py",
        lineno=1,
        module=module,
    )


def test_deprecation_warning_in_our_code_is_an_error() -> None:
    with pytest.raises(DeprecationWarning, match="old API"):
        _warn_from("steam_ray.train.recipe")


def test_third_party_deprecation_noise_is_ignored() -> None:
    with warnings.catch_warnings(record=True) as seen:
        # record=True resets nothing: the ini filters stay in force for these modules.
        _warn_from("ray.data.dataset")
        _warn_from("torch.utils.data")
    assert not [w for w in seen if issubclass(w.category, DeprecationWarning)]
