"""MRIDenoiseLib: Rician denoising and bias correction of MRI volumes, with no Qt and no Slicer."""

__version__ = "0.1.0"


def __getattr__(name):
    """``from MRIDenoiseLib import MRIDenoiseLogic``: the Slicer logic, imported on first use (needs slicer-core)."""
    if name == "MRIDenoiseLogic":
        from .slicer_logic import MRIDenoiseLogic

        return MRIDenoiseLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
