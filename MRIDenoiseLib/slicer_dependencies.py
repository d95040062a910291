"""What the worker needs inside Slicer's Python, and which of it is missing, without importing any of it.

Torch comes from the PyTorch extension (it picks the CUDA build for the driver); SimpleITK and numpy
come with Slicer and are never installed (Slicer's SimpleITK has its own IO classes).

>>> versions = {"monai": "1.5.0", "scipy": "1.9.0"}
>>> missing_requirements(["monai>=1.4", "scipy>=1.10", "nibabel>=5.0"], versions.get)
['scipy>=1.10', 'nibabel>=5.0']
>>> missing_requirements([TORCH_REQUIREMENT], {"torch": "2.5.1+cu121"}.get)
[]
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Callable, Optional, Sequence

TORCH_REQUIREMENT = "torch>=2.4"
REQUIREMENTS = ("monai>=1.4", "scipy>=1.10", "nibabel>=5.0")
NEVER_INSTALLED = ("SimpleITK", "numpy", "torch")


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def _satisfied(requirement: str, version: Optional[str]) -> bool:
    if version is None:
        return False
    try:
        from packaging.requirements import Requirement

        return Requirement(requirement).specifier.contains(version.split("+")[0], prereleases=True)
    except ImportError:  # only ">=" is used above
        match = re.match(r"^[A-Za-z0-9_.\-]+\s*>=\s*([0-9.]+)$", requirement)
        return match is None or _release(version) >= _release(match.group(1))


def requirement_name(requirement: str) -> str:
    """The package name of a requirement.

    >>> requirement_name("monai>=1.4")
    'monai'
    """
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def missing_requirements(requirements: Sequence[str] = REQUIREMENTS,
                         version: Callable[[str], Optional[str]] = installed_version) -> list[str]:
    """The requirements whose package is absent or too old."""
    return [req for req in requirements if not _satisfied(req, version(requirement_name(req)))]
