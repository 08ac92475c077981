"""``.vti`` input: VTK's own reader when the ``vtk`` package is importable, else the built-in reader, which reads
what ``write_vti`` writes and answers anything else with one line saying to ``pip install vtk``.

tests/data/vtk/*.vti: the volume ``VOLUME`` as cell data, spacing (x, y, z) = (0.25, 0.5, 2), written by VTK 9.7.2's
vtkXMLImageDataWriter in each of its modes (default: appended base64 zlib).
"""
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from micro3diff.cli import main
from micro3diff.errors import UserError
from micro3diff.io.arrays import read_array
from micro3diff.io.vti import read_vti, write_vti

DATA = Path(__file__).parent / "data" / "vtk"
VOLUME = (np.arange(24).reshape(2, 3, 4) % 3).astype(np.uint8)
BUILTIN = ["appended_raw", "appended_raw_zlib"]  # raw appended data: the built-in reader reads these
NEEDS_VTK = ["appended_base64_zlib", "binary_base64_zlib", "ascii", "appended_raw_lz4"]


@pytest.fixture
def no_vtk(monkeypatch):
    monkeypatch.setitem(sys.modules, "vtkmodules.vtkIOXML", None)  # import fails as if vtk were not installed


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_reader_reads_vtks_raw_appended_files(no_vtk, name):
    volume, spacing, origin = read_vti(DATA / f"{name}.vti")
    assert np.array_equal(volume, VOLUME) and spacing == (2.0, 0.5, 0.25) and origin == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("name", NEEDS_VTK)
def test_builtin_reader_says_pip_install_vtk(no_vtk, tmp_path, name):
    with pytest.raises(UserError, match="pip install vtk"):
        read_vti(DATA / f"{name}.vti")
    np.save(tmp_path / "ref.npy", np.zeros((6, 6, 6), np.uint8))
    res = CliRunner().invoke(main, ["evaluate", str(DATA / f"{name}.vti"), "--reference", str(tmp_path / "ref.npy"),
                                    "-o", str(tmp_path / "report")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.count("\n") == 1 and "pip install vtk" in res.output and not (tmp_path / "report").exists()


@pytest.mark.parametrize("name", BUILTIN + NEEDS_VTK)
def test_vtks_reader_reads_every_mode(name):
    pytest.importorskip("vtkmodules.vtkIOXML")
    volume, spacing, origin = read_vti(DATA / f"{name}.vti")
    assert np.array_equal(volume, VOLUME) and spacing == (2.0, 0.5, 0.25) and origin == (0.0, 0.0, 0.0)
    assert np.array_equal(read_array(DATA / f"{name}.vti"), VOLUME)


@pytest.mark.parametrize("cells", [True, False])
def test_vtks_reader_reads_write_vti_and_refuses_junk(tmp_path, cells):
    pytest.importorskip("vtkmodules.vtkIOXML")
    write_vti(tmp_path / "v.vti", VOLUME, spacing=(2, 0.5, 0.25), origin=(1, 2, 3), cells=cells)
    volume, spacing, origin = read_vti(tmp_path / "v.vti")
    assert np.array_equal(volume, VOLUME) and spacing == (2.0, 0.5, 0.25) and origin == (1.0, 2.0, 3.0)
    (tmp_path / "cut.vti").write_bytes((DATA / "appended_base64_zlib.vti").read_bytes()[:400])
    for bad in ("cut.vti", "missing.vti"):
        with pytest.raises(UserError, match="cannot read"):
            read_vti(tmp_path / bad)


class FakeArray:
    def __init__(self, values, components=1):
        self.values, self.components = values, components

    def GetNumberOfComponents(self):
        return self.components

    def GetNumberOfTuples(self):
        return self.values.size // self.components


class FakeData:
    def __init__(self, array):
        self.array = array

    def GetScalars(self):
        return self.array

    def GetArray(self, i):
        return self.array


class FakeImage:
    def GetDimensions(self):
        return 5, 4, 3  # points: 4 x 3 x 2 cells

    def GetCellData(self):
        return FakeData(FakeArray(VOLUME.ravel(), components=3 if FakeReader.vector else 1))

    def GetPointData(self):
        return FakeData(None)

    def GetSpacing(self):
        return 0.25, 0.5, 2.0

    def GetOrigin(self):
        return 3.0, 2.0, 1.0


class FakeReader:
    vector = False
    files: list[str] = []

    def CanReadFile(self, name):
        return name.endswith(".vti")

    def SetFileName(self, name):
        self.files.append(name)

    def Update(self):
        assert not FakeObject.display  # VTK's own error log is off while it reads

    def GetOutput(self):
        return FakeImage()


class FakeObject:
    display = 1

    @classmethod
    def GetGlobalWarningDisplay(cls):
        return cls.display

    @classmethod
    def GlobalWarningDisplayOff(cls):
        cls.display = 0

    @classmethod
    def SetGlobalWarningDisplay(cls, value):
        cls.display = value


def test_reader_path_with_a_fake_vtk(monkeypatch, tmp_path):
    """The VTK path as the vtk package's API has it, tested where vtk is not installed too."""
    modules = {"vtkmodules": {}, "vtkmodules.util": {},
               "vtkmodules.vtkIOXML": {"vtkXMLImageDataReader": FakeReader},
               "vtkmodules.vtkCommonCore": {"vtkObject": FakeObject},
               "vtkmodules.util.numpy_support": {"vtk_to_numpy": lambda a: a.values}}
    for name, attrs in modules.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    monkeypatch.setattr(FakeReader, "files", [])
    volume, spacing, origin = read_vti(DATA / "ascii.vti")  # a file the built-in reader refuses
    assert np.array_equal(volume, VOLUME) and spacing == (2.0, 0.5, 0.25) and origin == (1.0, 2.0, 3.0)
    assert FakeReader.files == [str(DATA / "ascii.vti")] and FakeObject.display == 1
    with pytest.raises(UserError, match="does not recognise"):
        read_vti(tmp_path / "x.notvti")
    monkeypatch.setattr(FakeReader, "vector", True)
    with pytest.raises(UserError, match="no one-component image array"):
        read_vti(DATA / "ascii.vti")


def test_vtk_is_an_optional_extra():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("vtk") for d in project["optional-dependencies"]["vtk"])
    assert not any(d.startswith("vtk") for d in project["dependencies"])
