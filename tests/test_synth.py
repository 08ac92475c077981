"""Synthetic microstructures: requested statistics, exact geometry, seeds, the ``m3d synth`` CLI, .vti files."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from micro3diff.cli import main
from micro3diff.errors import UserError
from micro3diff.io.vti import read_vti, write_vti
from micro3diff.synth import generators as synth

try:  # polycrystals (k-d tree) and the grain measurements need scipy
    import scipy  # noqa: F401

    HAS_SCIPY = True
except ImportError:
    HAS_SCIPY = False
needs_scipy = pytest.mark.skipif(not HAS_SCIPY, reason="needs scipy")


def min_image(delta, period):
    return delta - period * np.round(delta / period)


def assert_disjoint(centres, rho, aspect, shape, periodic=True):
    """Particles {x: |(x - c_i) / aspect| <= rho_i} do not overlap, by centre distances and voxel by voxel.

    Returns (union mask, voxels per particle).
    """
    aspect = np.asarray(aspect, float)
    delta = centres[:, None] - centres[None]
    if periodic:
        delta = min_image(delta, np.asarray(shape, float))
    gap = np.linalg.norm(delta / aspect, axis=-1) - (rho[:, None] + rho[None])
    np.fill_diagonal(gap, np.inf)
    assert gap.min() > 0
    coverage = np.zeros(shape, np.int32)  # brute force over the whole grid, per-axis minimum image
    sizes = []
    for c, r in zip(centres, rho):
        d2 = 0
        for axis, n in enumerate(shape):
            diff = np.arange(n) - c[axis]
            diff = min_image(diff, n) if periodic else diff
            d2 = np.expand_dims(d2, -1) + (diff / (r * aspect[axis])) ** 2
        inside = d2 <= 1
        coverage += inside
        sizes.append(inside.sum())
    assert coverage.max() == 1
    return coverage.astype(bool), np.array(sizes)


def lineal_path(mask, axis, z_max):
    """Brute force periodic L(z) of ``mask`` along ``axis``: every window of z+1 voxels inside, z = 0..z_max."""
    window = mask.copy()
    out = [window.mean()]
    for z in range(1, z_max + 1):
        window &= np.roll(mask, -z, axis)
        out.append(window.mean())
    return np.array(out)


def torus_components(mask):
    """Number of 8-connected components of a 2D mask on the torus (edges wrap)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    idx = np.arange(mask.size).reshape(mask.shape)
    rows, cols = [], []
    for shift in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        both = mask & np.roll(mask, shift, (0, 1))
        rows.append(idx[both])
        cols.append(np.roll(idx, shift, (0, 1))[both])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(mask.size, mask.size))
    return len(np.unique(connected_components(graph, directed=False)[1][mask.ravel()]))


# ------------------------------------------------------------------------------------------ spheres


def test_spheres_case_i_statistics():
    m = synth.spheres(seed=0)  # paper case I: 64 x 64 x 300, d = 15 +- 4
    assert m.array.shape == (300, 64, 64) and m.array.dtype == np.uint8
    assert set(np.unique(m.array)) == {0, 1}
    assert 0.2 <= m.array.mean() < 0.205
    union, sizes = assert_disjoint(m.centres, m.radii, np.ones(3), m.array.shape)
    assert np.array_equal(union, m.array == 1)
    measured = (6 * sizes / np.pi) ** (1 / 3)  # voxel-counted equivalent diameters
    assert np.abs(measured - 2 * m.radii).mean() < 0.3
    diameters = np.concatenate([2 * m.radii] + [2 * synth.spheres(seed=s).radii for s in (1, 2)])
    assert abs(diameters.mean() - 15) < 0.8 and abs(diameters.std() - 4) < 0.6
    stats = synth.describe(m)
    assert stats["diameters"]["1"]["count"] == len(m.radii)
    assert stats["phase_fractions"]["1"] == pytest.approx(m.array.mean())


def test_disks_and_open_box():
    m = synth.spheres((256, 256), diameter_mean=12, diameter_sd=2, volume_fraction=0.3, seed=1)
    assert m.array.ndim == 2 and 0.3 <= m.array.mean() < 0.31
    union, _ = assert_disjoint(m.centres, m.radii, np.ones(2), m.array.shape)
    assert np.array_equal(union, m.array == 1)
    m = synth.spheres((40, 48, 56), volume_fraction=0.15, periodic=False, seed=2)
    union, _ = assert_disjoint(m.centres, m.radii, np.ones(3), m.array.shape, periodic=False)
    assert np.array_equal(union, m.array == 1) and m.array.mean() >= 0.15


@pytest.mark.parametrize(
    "kwargs",
    [
        {"volume_fraction": 0.6},  # beyond what random sequential addition can reach
        {"volume_fraction": 1.2},
        {"diameter_mean": -3},
        {"diameter_sd": -1},
        {"diameter_mean": 40},  # larger than half the 64-voxel side
        {"shape": (10, 0, 10)},
    ],
)
def test_spheres_impossible_raise(kwargs):
    with pytest.raises(UserError):
        synth.spheres(**{"shape": (64, 64, 64), **kwargs}, seed=0)


def test_multiphase_labels_and_fractions():
    m = synth.multiphase((64, 64, 64), diameter_mean=(14, 6), diameter_sd=(2, 1), volume_fraction=(0.15, 0.1), seed=3)
    assert set(np.unique(m.array)) == {0, 1, 2}
    for p, f in ((1, 0.15), (2, 0.1)):
        assert f <= (m.array == p).mean() < f + 0.01
        assert np.all(m.array[tuple(np.round(m.centres[m.phase == p]).astype(int).T % 64)] == p)
    assert_disjoint(m.centres, m.radii, np.ones(3), m.array.shape)
    d = {p: 2 * m.radii[m.phase == p] for p in (1, 2)}
    assert abs(d[1].mean() - 14) < 1.5 and abs(d[2].mean() - 6) < 0.5


# ------------------------------------------------------------------------------------------ polycrystal


@needs_scipy
def test_polycrystal_case_ii_images():
    from scipy import ndimage

    m = synth.image_stack(synth.polycrystal, 30, (64, 64), seed=0)  # paper case II, 30 of the 300 images
    assert m.array.shape == (30, 64, 64) and m.stack and set(np.unique(m.array)) == {0, 1}
    fractions = {6: 0.0, 9: 0.0, 12: 0.0}
    interior_diameter = {6: [], 9: [], 12: []}
    for i, (image, owner) in enumerate(zip(m.array, m.labels)):
        # grain interiors (4-connected) never straddle two grains: the boundaries separate them
        interior, n = ndimage.label(image == 0)
        index = np.arange(1, n + 1)
        assert np.array_equal(ndimage.minimum(owner, interior, index), ndimage.maximum(owner, interior, index))
        # the boundary network is one 8-connected piece (on the torus: the images are periodic)
        assert torus_components(image == 1) == 1
        grains = np.flatnonzero(m.centres[:, 0] == i)  # this image's seeds; labels index into them
        cells = np.bincount(owner.ravel() - grains[0], minlength=len(grains))
        kept = np.bincount(owner[image == 0] - grains[0], minlength=len(grains))
        nominal = 2 * m.radii[grains]
        for size in fractions:
            fractions[size] += cells[nominal == size].sum() / image.size / len(m.array)
            interior_diameter[size] += list(np.sqrt(4 * kept[nominal == size] / np.pi))
        # grain size = equivalent diameter of the grain with its (one-sided) boundary pixels
        for size in fractions:
            assert abs(np.sqrt(4 * cells[nominal == size] / np.pi).mean() - size) < 0.1 * size
    assert all(abs(f - 1 / 3) < 0.03 for f in fractions.values())
    medians = [np.median(interior_diameter[s]) for s in (6, 9, 12)]
    assert medians[0] < medians[1] < medians[2]
    classes = synth.describe(m)["grain_classes"]
    assert {k: v["fraction"] for k, v in classes.items()} == pytest.approx({f"{s}": f for s, f in fractions.items()})


@needs_scipy
def test_polycrystal_volume():
    from scipy import ndimage

    m = synth.polycrystal((48, 48, 48), seed=1)
    assert m.array.shape == (48, 48, 48) and set(np.unique(m.array)) == {0, 1}
    for size, stats in synth.describe(m)["grain_classes"].items():
        assert abs(stats["fraction"] - 1 / 3) < 0.03
        assert abs(stats["equivalent_diameter_mean"] - float(size)) < 0.1 * float(size)
    interior, n = ndimage.label(m.array == 0)
    index = np.arange(1, n + 1)
    assert np.array_equal(ndimage.minimum(m.labels, interior, index), ndimage.maximum(m.labels, interior, index))


def test_polycrystal_rejects_big_grains():
    with pytest.raises(UserError):
        synth.polycrystal((64, 64), grain_sizes=(6, 100), seed=0)


# ------------------------------------------------------------------------------------------ Boolean models


def test_overlapping_spheres_match_lineal_path_oracle():
    radius = 6.0
    m = synth.overlapping_spheres((96, 96, 96), radius=radius, matrix_fraction=0.6, seed=0)
    phi = m.array.mean()
    assert abs(phi - 0.6) < 0.02
    z = np.arange(13)
    for axis in range(3):  # L(z) = phi^(1 + 3z / (4R)) for the matrix (phase 1)
        measured = lineal_path(m.array == 1, axis, 12)
        np.testing.assert_allclose(measured, phi ** (1 + 3 * z / (4 * radius)), rtol=0.04)


def test_overlapping_disks_match_lineal_path_oracle():
    radius = 5.0
    m = synth.overlapping_spheres((512, 512), radius=radius, matrix_fraction=0.5, seed=1)
    phi = m.array.mean()
    assert abs(phi - 0.5) < 0.02
    z = np.arange(11)
    for axis in range(2):  # 2D: L(z) = phi^(1 + 2z / (pi R))
        expected = phi ** (1 + 2 * z / (np.pi * radius))
        np.testing.assert_allclose(lineal_path(m.array == 1, axis, 10), expected, rtol=0.04)


def test_ellipsoids_are_anisotropic():
    axes = (12.0, 4.0, 4.0)
    m = synth.ellipsoids((96, 64, 64), semi_axes=axes, volume_fraction=0.3, seed=0)
    phi = 1 - m.array.mean()
    assert abs(phi - 0.7) < 0.02
    z = np.arange(9)
    for axis, a in enumerate(axes):  # matrix L(z) = phi^(1 + 3z / (4 a_axis)): long chords along D
        np.testing.assert_allclose(lineal_path(m.array == 0, axis, 8), phi ** (1 + 3 * z / (4 * a)), rtol=0.05)
    packed = synth.ellipsoids((96, 64, 64), semi_axes=axes, volume_fraction=0.15, overlapping=False, seed=1)
    assert 0.15 <= packed.array.mean() < 0.16
    union, _ = assert_disjoint(packed.centres, np.ones(len(packed.centres)), axes, packed.array.shape)
    assert np.array_equal(union, packed.array == 1)


# ------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: synth.spheres((48, 48, 48), seed=seed),
        lambda seed: synth.multiphase((48, 48, 48), seed=seed),
        pytest.param(lambda seed: synth.polycrystal((64, 64), seed=seed), marks=needs_scipy),
        lambda seed: synth.overlapping_spheres((48, 48, 48), seed=seed),
        lambda seed: synth.ellipsoids((48, 48, 48), semi_axes=(8, 3, 3), seed=seed),
        lambda seed: synth.image_stack(synth.spheres, 3, (64, 64), seed=seed),
    ],
)
def test_seeds_reproduce(make):
    a, b, c = make(7).array, make(7).array, make(8).array
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_writes_volume_and_sidecar(tmp_path):
    out = tmp_path / "s.npy"
    result = CliRunner().invoke(main, ["synth", "spheres", "-o", str(out), "--shape", "40,48,48", "--seed", "3",
                                       "--diameter", "10", "--diameter-sd", "2", "--volume-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    expected = synth.spheres((40, 48, 48), diameter_mean=10, diameter_sd=2, volume_fraction=0.25, seed=3).array
    assert np.array_equal(np.load(out), expected)
    meta = json.loads((tmp_path / "s.npy.json").read_text())
    assert meta["kind"] == "spheres" and meta["seed"] == 3
    assert meta["parameters"]["diameter_mean"] == 10 and meta["parameters"]["shape"] == [40, 48, 48]
    assert meta["statistics"]["phase_fractions"]["1"] == pytest.approx(expected.mean())
    assert "torch" in meta["provenance"]


@needs_scipy
def test_cli_image_stack_tif(tmp_path):
    import tifffile

    out = tmp_path / "grains.tif"
    result = CliRunner().invoke(main, ["synth", "polycrystal", "--count", "4", "-o", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert tifffile.imread(out).shape == (4, 64, 64)
    meta = json.loads((tmp_path / "grains.tif.json").read_text())
    assert meta["parameters"]["count"] == 4 and set(meta["statistics"]["grain_classes"]) == {"6", "9", "12"}
    result = CliRunner().invoke(main, ["synth", "multiphase", "--size", "40", "-o", str(tmp_path / "m.npy"),
                                       "--diameter", "10,5", "--diameter-sd", "1,1", "--volume-fraction", "0.1,0.1"])
    assert result.exit_code == 0, result.output
    assert set(np.unique(np.load(tmp_path / "m.npy"))) == {0, 1, 2}


@pytest.mark.parametrize(
    "name, args",
    [
        ("x.npy", ["spheres", "--volume-fraction", "0.9", "--shape", "48,48,48"]),
        ("x.npy", ["spheres", "--diameter", "-3"]),
        ("x.npy", ["spheres", "--radius", "4"]),
        ("x.npy", ["spheres", "--shape", "32,32,32", "--size", "32"]),
        ("x.npy", ["spheres", "--shape", "a,b"]),
        ("x.npy", ["polycrystal", "--grain-sizes", "6,100"]),
        ("x.npy", ["polycrystal", "--count", "2", "--shape", "8,64,64"]),
        ("x.npy", ["overlapping-spheres", "--volume-fraction", "1.5"]),
        ("x.npy", ["ellipsoids", "--semi-axes", "3,3"]),
        ("x.png", ["spheres", "--shape", "16,16,16"]),
        ("x.xyz", ["spheres"]),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, name, args):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["synth", *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error:") and result.output.count("\n") == 1
    assert not out.exists()


# ------------------------------------------------------------------------------------------ .vti


@pytest.mark.parametrize("cells", [True, False])
@pytest.mark.parametrize("compress", [True, False])
def test_vti_round_trip(tmp_path, cells, compress):
    volume = synth.multiphase((20, 24, 28), diameter_mean=(8, 4), diameter_sd=(1, 1), seed=0).array
    path = tmp_path / "v.vti"
    write_vti(path, volume, spacing=(0.5, 1.0, 2.0), origin=(1, 2, 3), cells=cells, compress=compress)
    back, spacing, origin = read_vti(path)
    assert back.dtype == np.uint8 and np.array_equal(back, volume)
    assert spacing == (0.5, 1.0, 2.0) and origin == (1.0, 2.0, 3.0)


def test_vti_images_bools_and_errors(tmp_path):
    image = np.random.default_rng(0).random((5, 7)) > 0.5
    write_vti(tmp_path / "i.vti", image)
    assert np.array_equal(read_vti(tmp_path / "i.vti")[0], image[None].astype(np.uint8))
    with pytest.raises(UserError):
        write_vti(tmp_path / "bad.vti", np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(UserError):
        write_vti(tmp_path / "bad.vti", np.zeros((2, 2, 2), np.uint8), spacing=(1, 2))
    (tmp_path / "junk.vti").write_text("not xml")
    with pytest.raises(UserError):
        read_vti(tmp_path / "junk.vti")


def test_vti_reads_in_vtk(tmp_path):
    """The reference reader (optional: ``pip install vtk``) sees the same voxels with x = W, y = H, z = D."""
    pytest.importorskip("vtkmodules.vtkIOXML")
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLImageDataReader

    volume = synth.multiphase((20, 24, 28), diameter_mean=(8, 4), diameter_sd=(1, 1), seed=0).array
    for cells in (True, False):
        path = tmp_path / f"v{cells}.vti"
        write_vti(path, volume, spacing=(0.5, 1.0, 2.0), origin=(1, 2, 3), cells=cells)
        reader = vtkXMLImageDataReader()
        reader.SetFileName(str(path))
        reader.Update()
        image = reader.GetOutput()
        data = (image.GetCellData() if cells else image.GetPointData()).GetArray("phase")
        assert reader.GetErrorCode() == 0 and data is not None
        assert image.GetSpacing() == (2.0, 1.0, 0.5) and image.GetOrigin() == (3.0, 2.0, 1.0)
        dims = np.array(image.GetDimensions()) - (1 if cells else 0)
        assert tuple(dims) == (28, 24, 20)
        values = vtk_to_numpy(data)
        assert np.array_equal(values.reshape(20, 24, 28), volume)
        d, h, w = 3, 5, 7  # VTK's own index -> id: x + X * (y + Y * z)
        assert values[w + dims[0] * (h + dims[1] * d)] == volume[d, h, w]
