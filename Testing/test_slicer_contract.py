"""The fixed scripting contract, in the situation of Slicer's own process: MRML yes, torch never.

``from MRIDenoiseLib import MRIDenoiseLogic`` works with slicer-core, and
``MRIDenoiseLogic().process(node, biasCorrection=False)`` returns a new volume node in ``node``'s
scene with the input's geometry. The process that holds the scene must not import torch, MONAI,
SciPy or SimpleITK (only the worker does): here they are made unimportable in that process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_slicer_scene import slicer  # noqa: F401  (skips without slicer-core)

from MRIDenoiseLib.model import DEFAULT_WEIGHTS

REPO = Path(__file__).resolve().parents[1]


def test_package_exports_the_logic_lazily():
    import MRIDenoiseLib
    from MRIDenoiseLib import MRIDenoiseLogic
    from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic as direct

    assert MRIDenoiseLogic is direct
    with pytest.raises(AttributeError):
        MRIDenoiseLib.NoSuchThing  # noqa: B018


SCRIPT = textwrap.dedent("""
    import os, sys
    for name in ("torch", "monai", "scipy", "SimpleITK", "nibabel"):
        sys.modules[name] = None  # importing any of these now raises ImportError
    import numpy as np
    import slicer, slicer.util
    from MRIDenoiseLib import MRIDenoiseLogic
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    z, y, x = np.mgrid[:18, :20, :22]
    slicer.util.updateVolumeFromArray(node, (100 + 40 * np.sin(x / 3.0) + 10 * np.cos(y * z / 7.0)).astype(np.float32))
    node.SetOrigin(-12.5, 30.0, 7.25)
    node.SetSpacing(0.8, 1.2, 2.5)
    node.SetIJKToRASDirections(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    before = slicer.util.arrayFromVolume(node).copy()
    weights = sys.argv[1] if len(sys.argv) > 1 else None
    logic = MRIDenoiseLogic() if weights is None else MRIDenoiseLogic(weights=weights)
    output = logic.process(node, biasCorrection=False)
    a, b = vtkMatrix4x4(), vtkMatrix4x4()
    node.GetIJKToRASMatrix(a); output.GetIJKToRASMatrix(b)
    assert output.GetScene() is scene and output.IsA("vtkMRMLScalarVolumeNode"), output
    assert all(a.GetElement(i, j) == b.GetElement(i, j) for i in range(4) for j in range(4))
    assert np.array_equal(slicer.util.arrayFromVolume(node), before)
    assert slicer.util.arrayFromVolume(output).shape == before.shape
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    print("OK", sorted(m for m in ("torch", "monai", "scipy", "SimpleITK") if sys.modules.get(m) is not None))
""")


def test_contract_holds_in_a_process_without_torch(tiny_weights, tmp_path):
    arguments = [] if DEFAULT_WEIGHTS.is_file() else [str(tiny_weights)]  # the bundled model once it exists
    run = subprocess.run([sys.executable, "-c", SCRIPT, *arguments], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "OK []"
