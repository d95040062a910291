"""The extension's files: CMake lists against the folders, a real CMake run, the .ui against the module.

The CMake run configures the real top-level CMakeLists.txt against a stand-in for Slicer's CMake
package whose macros copy files the way Slicer's do (every script path lands under
qt-scripted-modules/ as given), then imports the module's logic from the resulting folder.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "MRIDenoiseLib"
MODULE = REPO / "MRIDenoise"


def cmake_list(path: Path, variable: str) -> list[str]:
    """The items of ``set(VARIABLE ...)`` (or ``file(GLOB VARIABLE ...)``) in a CMakeLists.txt."""
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"(?:set|file)\((?:GLOB\s+)?{variable}\b(.*?)\)", text, re.S)
    assert match, f"{variable} not found in {path}"
    items = [item for item in match.group(1).split() if item not in ("RELATIVE", "${CMAKE_CURRENT_SOURCE_DIR}")]
    return [item.replace("${MODULE_NAME}", "MRIDenoise") for item in items]


def test_every_lib_source_is_listed_and_every_listed_file_exists():
    listed = cmake_list(LIB / "CMakeLists.txt", "LIB_PYTHON_SCRIPTS")
    on_disk = sorted(str(path.relative_to(LIB)) for path in LIB.rglob("*.py") if "__pycache__" not in path.parts)
    assert sorted(listed) == on_disk
    for item in cmake_list(MODULE / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS") + \
            cmake_list(MODULE / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES"):
        assert (MODULE / item).is_file(), item


def test_weights_patterns_match_the_python_package_data():
    globs = cmake_list(LIB / "CMakeLists.txt", "LIB_PYTHON_RESOURCES")
    line = re.search(r"^MRIDenoiseLib = \[(.*)\]$", (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M).group(1)
    package_data = re.findall(r'"([^"]+)"', line)  # [tool.setuptools.package-data]
    assert sorted(globs) == sorted(package_data)
    from MRIDenoiseLib.model import DEFAULT_WEIGHTS

    text = (LIB / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f'"weights/{DEFAULT_WEIGHTS.name}" IN_LIST' in text and f'"weights/{DEFAULT_WEIGHTS.name}.sha256" IN_LIST' in text
    for path in (LIB / "weights").glob("*"):
        assert any(path.match(pattern) for pattern in globs), f"{path.name} would not be installed"


def test_top_level_cmake_declares_the_extension():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                     "EXTENSION_SCREENSHOTURLS", "EXTENSION_CONTRIBUTORS"):
        assert re.search(rf'set\({variable} "[^"]+"\)', text), variable
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert text.index("add_subdirectory(MRIDenoiseLib)") < text.index("add_subdirectory(MRIDenoise)")
    icon = re.search(r'EXTENSION_ICONURL ".*/main/(.*?)"', text).group(1)
    assert (REPO / icon).is_file()
    module_cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in module_cmake and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module_cmake
    assert "../" not in "".join(cmake_list(MODULE / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS"))


def test_icons_are_png_of_the_right_size():
    for path, size in ((REPO / "Resources" / "MRIDenoise.png", 128), (MODULE / "Resources" / "Icons" / "MRIDenoise.png", None)):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width == height and (size is None or width == size)


def test_ui_parameter_names_and_widgets_match_the_module():
    ui = ElementTree.parse(MODULE / "Resources" / "UI" / "MRIDenoise.ui")
    names = {widget.get("name") for widget in ui.iter("widget")}
    bound = {prop.findtext("string") for prop in ui.iter("property") if prop.get("name") == "SlicerParameterName"}
    tree = ast.parse((MODULE / "MRIDenoise.py").read_text(encoding="utf-8"))
    parameters = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "MRIDenoiseParameterNode")
    fields = {item.target.id for item in parameters.body if isinstance(item, ast.AnnAssign)}
    assert bound == fields
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used and used <= names, used - names
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"MRIDenoise", "MRIDenoiseWidget", "MRIDenoiseLogic", "MRIDenoiseTest"} <= classes
    assert len((MODULE / "MRIDenoise.py").read_text(encoding="utf-8").splitlines()) < 400


STAND_IN = textwrap.dedent("""
    # A stand-in for Slicer's CMake package: the same variables and macros, copying files as Slicer does.
    set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
    set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
    set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
    set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
    set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
    macro(ctkMacroCompilePythonScript)
      cmake_parse_arguments(CTKPY "NO_INSTALL_SUBDIR" "TARGET_NAME;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
      foreach(file IN LISTS CTKPY_SCRIPTS CTKPY_RESOURCES)
        if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${file})
          message(FATAL_ERROR "listed but missing: ${file}")
        endif()
        get_filename_component(dir ${CTKPY_DESTINATION_DIR}/${file} DIRECTORY)
        file(COPY ${CMAKE_CURRENT_SOURCE_DIR}/${file} DESTINATION ${dir})
      endforeach()
    endmacro()
    macro(slicerMacroBuildScriptedModule)
      cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
      ctkMacroCompilePythonScript(TARGET_NAME ${MY_NAME} SCRIPTS ${MY_SCRIPTS} RESOURCES ${MY_RESOURCES}
        DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
        INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR} NO_INSTALL_SUBDIR)
    endmacro()
    macro(slicer_add_python_unittest)
      file(APPEND ${CMAKE_BINARY_DIR}/unittests.txt "${ARGN}\\n")
    endmacro()
""")


def configure(tmp_path: Path, with_weights: bool) -> subprocess.CompletedProcess:
    source = tmp_path / "source"
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt", "*.sha256", "*.md", "*.tmp")
    for name in ("CMakeLists.txt", "MRIDenoise", "MRIDenoiseLib", "Resources"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=skip)
        else:
            shutil.copy(REPO / name, source / name)
    weights = source / "MRIDenoiseLib" / "weights"
    weights.mkdir(exist_ok=True)
    if with_weights:  # a stand-in model: the build copies bytes, it never reads them
        (weights / "mridenoise_v1.pt").write_bytes(b"weights")
        (weights / "mridenoise_v1.pt.sha256").write_text("0  mridenoise_v1.pt\n")
    stand_in = tmp_path / "Slicer"
    stand_in.mkdir()
    (stand_in / "SlicerConfig.cmake").write_text(STAND_IN)
    (stand_in / "UseSlicer.cmake").write_text("")
    (stand_in / "Empty.cmake").write_text("")
    return subprocess.run(
        ["cmake", "-S", str(source), "-B", str(tmp_path / "build"), f"-DSlicer_DIR={stand_in}", "-DBUILD_TESTING=ON",
         "-DCMAKE_C_COMPILER_WORKS=1", "-DCMAKE_CXX_COMPILER_WORKS=1"],
        capture_output=True, text=True, timeout=120)


needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@needs_cmake
def test_cmake_puts_module_and_lib_side_by_side_in_scripted_modules(tmp_path):
    run = configure(tmp_path, with_weights=True)
    assert run.returncode == 0, run.stderr[-2000:]
    modules = tmp_path / "build" / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    assert (modules / "MRIDenoise.py").is_file() and (modules / "Resources" / "UI" / "MRIDenoise.ui").is_file()
    installed = sorted(str(p.relative_to(modules / "MRIDenoiseLib")) for p in (modules / "MRIDenoiseLib").rglob("*.*"))
    expected = sorted([str(p.relative_to(LIB)) for p in LIB.rglob("*.py") if "__pycache__" not in p.parts]
                      + ["weights/mridenoise_v1.pt", "weights/mridenoise_v1.pt.sha256"])
    assert installed == expected
    assert (tmp_path / "build" / "unittests.txt").read_text(encoding="utf-8").split() == ["SCRIPT;MRIDenoise.py"]
    # The Lib imports from the folder Slicer puts on sys.path, as the module and the worker will.
    check = subprocess.run([sys.executable, "-c", "import MRIDenoiseLib.slicer_logic as m; print(m.__file__)"],
                           cwd=modules, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(modules)})
    assert check.returncode == 0, check.stderr
    assert Path(check.stdout.strip()).resolve() == (modules / "MRIDenoiseLib" / "slicer_logic.py").resolve()


@needs_cmake
def test_cmake_refuses_to_build_an_extension_without_weights(tmp_path):
    run = configure(tmp_path, with_weights=False)
    assert run.returncode != 0 and "mridenoise_v1.pt (and its .sha256) are missing" in run.stderr
