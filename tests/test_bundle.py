"""scripts/bundle.py, the offline install bundle for GPU nodes: its pure parts here, the whole bundle at the end."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

_spec = importlib.util.spec_from_file_location("ssrl_bundle", REPO / "scripts" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)

PLATFORM = "manylinux_2_28_x86_64"


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(path: Path, files: dict[str, bytes], executable: tuple[str, ...] = ()) -> Path:
    """A wheel holding `files` (deflated, as wheels come), with a true RECORD."""
    record = next(n for n in files if n.endswith(".dist-info/METADATA")).replace("METADATA", "RECORD")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name in executable else 0o644) << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
        rows = [f"{n},{_digest(d)},{len(d)}" for n, d in files.items()]
        z.writestr(record, "\n".join([*rows, f"{record},,"]) + "\n")
    return path


def _record_errors(wheel: Path) -> list[str]:
    """What RECORD gets wrong: a file it lacks, lists twice or gives the wrong hash or size, or an entry with no file."""
    with zipfile.ZipFile(wheel) as z:
        (record,) = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        rows = list(csv.reader(io.StringIO(z.read(record).decode())))
        listed = [r[0] for r in rows]
        errors = [f"listed {listed.count(n)} times: {n}" for n in set(listed) if listed.count(n) != 1]
        files = {n for n in z.namelist() if not n.endswith("/")}
        errors += [f"not listed: {n}" for n in sorted(files - set(listed))]
        errors += [f"no such file: {n}" for n in sorted(set(listed) - files)]
        for name, digest, size in rows:
            if name != record and name in files:
                data = z.read(name)
                if (digest, size) != (_digest(data), str(len(data))):
                    errors.append(f"wrong hash or size: {name}")
        return errors


DEMO = {
    "demo/__init__.py": b"def main():\n    return 0\n",
    "demo/tool.sh": b"#!/bin/sh\necho hi\n",
    "demo/big/__init__.py": b"",
    "demo/big/cli.py": b"def main():\n    return 1\n",
    "demo/big/blob.bin": bytes(range(256)) * 64,
    "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
    "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "demo-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndemo = demo:main\nbig = demo.big.cli:main\n",
}


def test_repack_drops_the_folders_stores_the_rest_and_rewrites_record(tmp_path):
    (tmp_path / "src").mkdir()
    src = _wheel(tmp_path / "src" / "demo-1.0-py3-none-any.whl", DEMO, executable=("demo/tool.sh",))
    assert _record_errors(src) == []  # the helper passes a true RECORD ...
    dst = tmp_path / "demo-1.0-py3-none-any.whl"
    bundle.repack(src, dst, drop=("demo/big/",))
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        assert not any(n.startswith("demo/big/") for n in names)
        assert {"demo/__init__.py", "demo/tool.sh", "demo-1.0.dist-info/RECORD"} <= names
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())  # raw bytes for xz
        assert all(z.read(n) == DEMO[n] for n in names if n in DEMO and not n.endswith("entry_points.txt"))
        assert (z.getinfo("demo/tool.sh").external_attr >> 16) & 0o777 == 0o755
        scripts = z.read("demo-1.0.dist-info/entry_points.txt").decode()
    assert "demo = demo:main" in scripts and "big" not in scripts  # no script into a removed module
    assert _record_errors(dst) == []
    # ... and pip installs the result (offline: the wheel file itself is the only source)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    str(dst)], check=True, capture_output=True, timeout=120)
    assert (target / "demo" / "tool.sh").exists() and not (target / "demo" / "big").exists()


def test_the_record_check_sees_a_stale_record(tmp_path):
    """The check above is not vacuous: dropping files without rewriting RECORD fails it."""
    (tmp_path / "src").mkdir()
    src = _wheel(tmp_path / "src" / "demo-1.0-py3-none-any.whl", DEMO)
    stale = tmp_path / "stale.whl"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(stale, "w") as zout:
        for info in zin.infolist():
            if not info.filename.startswith("demo/big/"):
                zout.writestr(info, zin.read(info))
    assert "no such file: demo/big/blob.bin" in _record_errors(stale)


def _meta(name: str, version: str, *requires: str) -> dict:
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


REPORT = {"install": [
    _meta("ssrl", "0.1.0", "ray[tune]>=2.40", "torch>=2.3", "filelock>=3.12", "torch-user",
          'tomli>=1; python_version < "3.11"', 'colorama; sys_platform == "win32"'),
    _meta("ray", "2.60.0", "filelock", 'pandas; extra == "tune"', 'aiohttp; extra == "default"'),
    _meta("torch", "2.13.0", "filelock", "sympy>=1.13", "networkx", 'nvidia-cublas-cu12; platform_system == "Linux"',
          'triton==3.5.0; platform_machine == "x86_64"', 'cuda-toolkit[cudart]==13.0; platform_system == "Linux"'),
    _meta("torch-user", "1.0", "torch", "nvidia-nccl-cu12", "numpy"),  # needs torch: torch stays out all the same
    _meta("sympy", "1.14.0", "mpmath<1.4"), _meta("mpmath", "1.3.0"), _meta("networkx", "3.6"),
    _meta("nvidia-cublas-cu12", "12.8"), _meta("nvidia-nccl-cu12", "2.27"), _meta("triton", "3.5.0"),
    _meta("cuda-toolkit", "13.0", 'nvidia-cuda-runtime; extra == "cudart"'), _meta("nvidia-cuda-runtime", "13.0"),
    _meta("filelock", "3.20.0"), _meta("pandas", "2.3.3", "numpy>=1.23"), _meta("numpy", "2.4.6"),
    _meta("aiohttp", "3.14.5"),
]}


def test_needed_leaves_out_torch_and_what_only_torch_needs():
    keep, missing = bundle.needed(REPORT, "ssrl", bundle.target_env("3.11", PLATFORM))
    assert keep == {"ssrl": "0.1.0", "ray": "2.60.0", "filelock": "3.20.0", "pandas": "2.3.3", "numpy": "2.4.6",
                    "torch-user": "1.0"}
    assert missing == []  # tomli is for 3.10 only; colorama for Windows; aiohttp for an extra not asked for


def test_needed_names_what_pip_left_out_for_another_python():
    """pip reads markers with the Python that runs it: a 3.10 bundle built on 3.11 needs tomli added."""
    keep, missing = bundle.needed(REPORT, "ssrl", bundle.target_env("3.10", PLATFORM))
    assert missing == ["tomli>=1"] and "tomli" not in keep


def test_needed_leaves_out_what_the_node_lists_at_a_version_that_fits():
    have = {"pandas": "2.2.0", "numpy": "1.26.4", "filelock": "3.10.0"}
    keep, _ = bundle.needed(REPORT, "ssrl", bundle.target_env("3.11", PLATFORM), have)
    assert "pandas" not in keep and "numpy" not in keep  # the node's fit every requirement on them
    assert keep["filelock"] == "3.20.0"  # ssrl needs filelock>=3.12: the node's 3.10.0 does not do


def test_read_have_takes_pip_list_freeze_and_says_how_to_make_it(tmp_path):
    listing = tmp_path / "node.txt"
    listing.write_text("# the node\nnumpy==2.5.2\nPyYAML==6.0.2\ntorch==2.11.0+cu130\n-e git+https://x/y#egg=z\n"
                       "mypkg @ file:///opt/mypkg\n\n")
    assert bundle.read_have(listing) == {"numpy": "2.5.2", "pyyaml": "6.0.2", "torch": "2.11.0+cu130"}
    listing.write_text("numpy\n")
    with pytest.raises(bundle.BundleError, match=r"lists no package as NAME==VERSION; .*pip list --format=freeze"):
        bundle.read_have(listing)
    with pytest.raises(bundle.BundleError, match=r"--have .*missing.txt: No such file"):
        bundle.read_have(tmp_path / "missing.txt")


def test_needed_refuses_a_version_the_target_python_cannot_take():
    report = {"install": [_meta("ssrl", "0.1.0", 'numpy<2; python_version < "3.11"'), _meta("numpy", "2.4.6")]}
    with pytest.raises(bundle.BundleError, match=r"numpy 2\.4\.6 .*numpy<2 on Python 3\.10"):
        bundle.needed(report, "ssrl", bundle.target_env("3.10", PLATFORM))


def test_platform_tags_run_from_the_node_glibc_down():
    tags = bundle.platform_tags("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_29_x86_64" not in tags
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert bundle.platform_tags("manylinux2014_aarch64") == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]


@pytest.mark.parametrize("bad", ["win_amd64", "linux_x86_64", "manylinux_2_12_x86_64", "macosx_11_0_arm64",
                                 "manylinux_2_28_riscv64"])
def test_an_unknown_platform_is_one_line_naming_the_setting(bad, tmp_path, capsys):
    assert bundle.main(["--platform", bad, "--out", str(tmp_path / "dist")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --platform {bad!r} ") and "e.g. manylinux_2_28_x86_64" in err and err.count("\n") == 1
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize("bad", ["3.9", "3", "3.12.1", "py312"])
def test_an_unsupported_python_is_one_line_naming_the_setting(bad, capsys):
    assert bundle.main(["--python-version", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --python-version {bad!r} ") and err.count("\n") == 1


def test_no_package_index_is_one_line_saying_what_is_needed(tmp_path):
    """Without an index (no network), the first pip step fails and bundle.py says why in one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")  # no pip.conf, no index, no find-links
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bundle.py"), "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "needs a package index" in done.stderr and not list(tmp_path.iterdir())


FAKE_PYTHON = """#!/bin/sh
# Stands in for the node's Python: answers install.sh's questions, records the pip command and its pin.
if [ "$1" = "-c" ]; then
  case "$2" in
    *version_info*) echo "$FAKE_VERSION" ;;
    *torch*) [ -n "$FAKE_TORCH" ] && echo "$FAKE_TORCH" || exit 1 ;;
    *) echo /node/env ;;
  esac
  exit 0
fi
echo "$@" > "$SEEN/argv"
while [ $# -gt 0 ]; do [ "$1" = "--constraint" ] && cat "$2" > "$SEEN/pin"; shift; done
"""


@pytest.fixture
def node(tmp_path):
    """An unpacked bundle's folder for this machine's architecture, and a fake node Python to run it with."""
    arch = platform.machine()
    folder = tmp_path / "ssrl-bundle"
    (folder / "wheels").mkdir(parents=True)
    (folder / "install.sh").write_text(bundle.install_script("3.12", f"manylinux_2_28_{arch}", "ssrl==0.1.0"))
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "SEEN": str(tmp_path), "FAKE_VERSION": "3.12", "FAKE_TORCH": "2.5.1+cu124"}

    def run(**changes: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(folder / "install.sh")], env={**env, **changes}, capture_output=True,
                              text=True, timeout=60)
    return folder, run


def test_install_sh_installs_without_an_index_and_pins_the_node_torch(node, tmp_path):
    folder, run = node
    done = run()
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:3] == ["-m", "pip", "install"] and "--no-index" in argv and argv[-1] == "ssrl==0.1.0"
    assert argv[argv.index("--find-links") + 1] == str(folder / "wheels")
    assert (tmp_path / "pin").read_text() == "torch==2.5.1+cu124\n"  # pip may not move the node's torch
    assert "torch 2.5.1+cu124 left as it was" in done.stdout


@pytest.mark.parametrize(("changes", "says"), [
    ({"FAKE_VERSION": "3.10"}, "this bundle is for Python 3.12 but"),
    ({"FAKE_TORCH": ""}, "no torch in the environment of"),
])
def test_install_sh_refuses_a_node_it_does_not_fit(node, tmp_path, changes, says):
    _, run = node
    done = run(**changes)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {says}") and done.stderr.count("\n") == 1
    assert not (tmp_path / "argv").exists()  # pip never ran


def test_install_sh_needs_the_whole_bundle(node):
    folder, run = node
    (folder / "wheels").rmdir()
    done = run()
    assert done.returncode == 2 and done.stderr.startswith("error: no wheels/ beside")


# --- the whole bundle: built, installed offline into a fresh venv with torch, and run -----------------------------


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("SSRL_BUNDLE_TEST") != "1",
                    reason="builds the whole bundle (needs a package index and 20-30 minutes); SSRL_BUNDLE_TEST=1 runs it")
def test_bundle_installs_offline_beside_torch_and_runs_a_sweep(tmp_path):
    """SSRL_BUNDLE_FILE=PATH tests a bundle built before (for this Python) instead of building one; its size is
    measured, not asserted here (docs/RESULTS.md section 15)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.environ.get("SSRL_BUNDLE_FILE"):
        archive = Path(os.environ["SSRL_BUNDLE_FILE"])
        assert archive.name.startswith(f"ssrl-bundle-{here}-"), f"{archive.name} is not a bundle for Python {here}"
    else:
        built = subprocess.run([sys.executable, str(REPO / "scripts" / "bundle.py"), "--out", str(tmp_path / "dist")],
                               capture_output=True, text=True, timeout=3600)
        assert built.returncode == 0, built.stderr
        (archive,) = (tmp_path / "dist").glob(f"ssrl-bundle-{here}-*.tar.xz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert not any(Path(n).name.startswith(("torch-", "nvidia_", "triton-")) for n in names)
        tar.extractall(tmp_path, filter="data")
    # The node: a fresh venv with torch installed first, as a GPU node has its CUDA torch.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True, timeout=1200)
    torch_before = _version(py, "torch")
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PYTHON": str(py)}
    folder = archive.name.removesuffix(".tar.xz")
    done = subprocess.run(["bash", str(tmp_path / folder / "install.sh"), "--no-index"], env=offline,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _version(py, "torch") == torch_before
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout
    assert subprocess.run([str(py), "-m", "pip", "show", "mlflow"], capture_output=True).returncode == 1  # skinny only
    env = {**os.environ, "SSRL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    plan = subprocess.run([str(py), "launch.py", "--sweep", "scarcity", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("plan (--dry-run): ssrl scarcity sweep") and "nothing was started" in plan.stdout
    # A real sweep on the slimmed Ray and the skinny MLflow client: Ray starts, Tune runs every trial, MLflow logs.
    ray_tmp = Path("/tmp") / f"ssrl-bundle-ray-{os.getpid()}"  # Ray's socket paths must stay short
    try:
        smoke = subprocess.run([str(py), "launch.py", "--sweep", "scarcity", "--scale", "smoke", "--out",
                                str(tmp_path / "runs")], cwd=REPO, env={**env, "RAY_TMPDIR": str(ray_tmp)},
                               capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    assert " 0 failed" in smoke.stdout and "the UI needs the full mlflow" in smoke.stdout


def _version(python: Path, dist: str) -> str:
    code = f"from importlib.metadata import version; print(version({dist!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
