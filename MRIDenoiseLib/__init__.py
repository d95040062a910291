"""MRIDenoiseLib: Rician denoising and bias correction of MRI volumes, with no Qt and no Slicer."""

__version__ = "0.1.0"
