"""Build an offline install bundle: one .tar.xz with the wheels a GPU node lacks, and its install.sh.

Hospital and HPC GPU nodes often have Python and CUDA torch but no package index. Where pip can
reach one (PyPI or a mirror):

    make bundle                                   # for this Python
    python scripts/bundle.py --python-version 3.12 --platform manylinux_2_28_x86_64

writes dist/ssrl-bundle-<python>-<platform>.tar.xz: this project's wheel and every wheel it needs
(Ray Tune, the MLflow client, Optuna, wfdb, ...) except torch and what only torch needs (nvidia-*,
triton, sympy, ...), with Ray cut down to what Tune uses. On the node, in the environment with torch:

    tar -xf ssrl-bundle-3.12-manylinux_2_28_x86_64.tar.xz
    bash ssrl-bundle-3.12-manylinux_2_28_x86_64/install.sh      # PYTHON=/path/to/python to pick one
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "ssrl"
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"  # the glibc (2.28) that torch's own Linux wheels need
PLATFORM = re.compile(r"(?:manylinux_2_(\d+)|manylinux2014)_(x86_64|aarch64)")
# Parts of Ray a Tune run never imports (checked on every module a smoke sweep's driver, workers and
# Ray's own processes import; docs/RESULTS.md section 15): the Java workers' jars, RLlib, Serve, the
# LLM libraries and the dashboard's web client (a dashboard head without it logs a warning and runs).
RAY_UNUSED = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/build/")
# xz at its strongest, with a dictionary that spans the largest wheel: the wheels go in uncompressed
# (ZIP_STORED), so xz sees raw bytes and finds repeats across files. Unpacking needs 192 MiB of memory.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 192 << 20}]


class BundleError(Exception):
    """A setting or a step that cannot work, said in one line with what to do."""


def provided(name: str) -> bool:
    """Whether the GPU node already has this distribution: torch and what comes with CUDA torch."""
    name = canonicalize_name(name)
    return name in ("torch", "triton") or name.startswith("nvidia-")


def check_python(version: str) -> str:
    """The --python-version as 'X.Y', if the project supports it."""
    m = re.fullmatch(r"3\.(\d+)", version)
    if not m or int(m[1]) < 10:
        raise BundleError(f"--python-version {version!r} is not a Python this project runs on; "
                          "give the GPU node's as X.Y, 3.10 or newer (python3 --version on the node)")
    return version


def platform_tags(platform: str) -> list[str]:
    """Every wheel platform tag a Linux node of `platform` runs, newest glibc first (pip matches each one exactly)."""
    m = PLATFORM.fullmatch(platform)
    if not m or (m[1] and int(m[1]) < 17):
        raise BundleError(f"--platform {platform!r} is not a glibc Linux wheel platform from manylinux2014 on; "
                          f"give the GPU node's, e.g. {DEFAULT_PLATFORM} or manylinux2014_aarch64")
    glibc, arch = int(m[1] or 17), m[2]
    lowest = 5 if arch == "x86_64" else 17  # aarch64 wheels start at manylinux2014
    tags = [f"manylinux_2_{v}_{arch}" for v in range(glibc, lowest - 1, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}  # the old names of 2_17, 2_12, 2_5
    return tags + [f"{name}_{arch}" for v, name in legacy.items() if lowest <= v <= glibc]


def target_env(python_version: str, platform: str) -> dict[str, str]:
    """PEP 508 marker values of CPython `python_version` on Linux `platform`."""
    env = default_environment()
    env.update(python_version=python_version, python_full_version=f"{python_version}.0",
               implementation_version=f"{python_version}.0", implementation_name="cpython",
               platform_python_implementation="CPython", os_name="posix", sys_platform="linux",
               platform_system="Linux", platform_machine=PLATFORM.fullmatch(platform)[2])
    return env


def read_have(path: Path) -> dict[str, str]:
    """{name: version} of the packages a node lists in its `pip list --format=freeze` (or `pip freeze`)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise BundleError(f"--have {path}: {e.strerror}; make it on the GPU node with "
                          "`python -m pip list --format=freeze > node.txt` and copy it here") from None
    pins = [m for line in lines if (m := re.fullmatch(r"\s*([A-Za-z0-9][\w.-]*)\s*==\s*([^\s;#]+).*", line))]
    if not pins:
        raise BundleError(f"--have {path} lists no package as NAME==VERSION; make it on the GPU node with "
                          "`python -m pip list --format=freeze > node.txt`")
    return {canonicalize_name(m[1]): m[2] for m in pins}


def _fits(version: str, req: Requirement) -> bool:
    try:
        return req.specifier.contains(version, prereleases=True)
    except ValueError:  # a version packaging cannot read
        return False


def needed(report: dict, root: str, env: dict[str, str],
           have: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """What `root` needs on `env`: {name: version} of the report's packages it reaches without passing
    through what the node provides (torch, and what `have` lists at a version that fits), and the
    requirements the report lacks.

    pip reads markers with the Python that runs it, not --python-version (pypa/pip#11010): a resolve
    for another Python can miss a dependency (tomli on 3.10) or carry one the target does not need.
    """
    found = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    keep: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    missing: dict[str, str] = {}
    todo = [(canonicalize_name(root), frozenset())]
    while todo:
        name, extras = todo.pop()
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        keep[name] = found[name]["version"]
        for line in found[name].get("requires_dist", []):
            req = Requirement(line)
            dep = canonicalize_name(req.name)
            if provided(dep) or (req.marker and not any(req.marker.evaluate({**env, "extra": e})
                                                        for e in {"", *seen[name]})):
                continue
            req.marker = None
            if dep in (have or {}) and _fits(have[dep], req):
                continue  # the node's own, and what it needs, are there already
            if dep not in found:
                missing[dep] = str(req)
                continue
            if not _fits(found[dep]["version"], req):
                raise BundleError(f"pip picked {dep} {found[dep]['version']} but {name} needs {req} on Python "
                                  f"{env['python_version']} (pip reads markers with this Python); "
                                  f"run scripts/bundle.py with Python {env['python_version']}")
            todo.append((dep, frozenset(req.extras)))
    return keep, sorted(missing.values())


def _pip(args: list[str], doing: str) -> None:
    """Run pip with this Python; a failure becomes one line with pip's last error."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "")
        raise BundleError(f"{doing} failed ({last}); bundle.py needs a package index (PyPI, or a mirror in "
                          "PIP_INDEX_URL) with wheels for that Python and platform")


def _target(python_version: str, tags: list[str]) -> list[str]:
    return ["--only-binary=:all:", "--python-version", python_version, *(a for t in tags for a in ("--platform", t))]


def build_project(work: Path) -> Path:
    """This checkout's wheel, built from a copy so that the build leaves nothing in the checkout."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / PROJECT, src / PROJECT, ignore=shutil.ignore_patterns("__pycache__"))
    _pip(["wheel", "-q", "--no-deps", "-w", str(work / "project"), str(src)], "building the project's wheel")
    (wheel,) = (work / "project").glob("*.whl")
    return wheel


def resolve(requirements: list[str], python_version: str, tags: list[str], work: Path) -> dict:
    """pip's resolution of `requirements` for that Python and platform (a dry run: nothing installed)."""
    report = work / "report.json"
    _pip(["install", "-q", "--dry-run", "--ignore-installed", "--report", str(report),
          *_target(python_version, tags), *requirements], "resolving the dependencies")
    return json.loads(report.read_text())


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _without_scripts_into(entry_points: bytes, drop: tuple[str, ...]) -> bytes:
    """entry_points.txt less the console scripts whose module is under a dropped folder."""
    kept = [line for line in entry_points.decode().splitlines(keepends=True)
            if not (m := re.match(r"\s*[\w.-]+\s*=\s*([\w.]+)", line))
            or not (m[1].replace(".", "/") + "/").startswith(drop)]
    return "".join(kept).encode()


def repack(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> None:
    """Copy a wheel without the files under the folders in `drop`, uncompressed (ZIP_STORED, so xz sees
    raw bytes), with a RECORD computed afresh from what is in it; file modes are kept."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        (record,) = [n for n in zin.namelist() if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
        rows = []
        for info in zin.infolist():
            if info.filename == record or info.filename.startswith(drop) or info.is_dir():
                continue
            data = zin.read(info)
            if info.filename == record.replace("RECORD", "entry_points.txt"):
                data = _without_scripts_into(data, drop)
            out = zipfile.ZipInfo(info.filename, info.date_time)
            out.external_attr = info.external_attr
            zout.writestr(out, data)
            rows.append([info.filename, _digest(data), str(len(data))])
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, [record, "", ""]])
        zout.writestr(zipfile.ZipInfo(record, (1980, 1, 1, 0, 0, 0)), text.getvalue())


INSTALL_SH = r"""#!/usr/bin/env bash
# Install @PROJECT@ and what it needs from the wheels beside this script, without a package index,
# into the environment of $PYTHON (default: python3 on PATH). Its torch stays as it is: the bundle
# holds no torch, and the installed torch is pinned for this install. Built for Python @PY@ on
# @PLATFORM@. Extra arguments go to pip (e.g. --user).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
fail() { echo "error: $*" >&2; exit 2; }
[ -d "$here/wheels" ] || fail "no wheels/ beside $0; unpack the whole bundle (tar -xf ssrl-bundle-*.tar.xz) and run the install.sh in it"
have="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || fail "cannot run $py; set PYTHON=/path/to/python"
[ "$have" = "@PY@" ] || fail "this bundle is for Python @PY@ but $py is $have; build one with: python scripts/bundle.py --python-version $have"
[ "$(uname -m)" = "@ARCH@" ] || fail "this bundle is for @ARCH@ but this machine is $(uname -m); build one with: python scripts/bundle.py --platform ..."
torch="$("$py" -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null)" || fail "no torch in the environment of $py; install the node's CUDA torch first (the bundle leaves torch out)"
pin="$(mktemp)"
trap 'rm -f "$pin"' EXIT
echo "torch==$torch" > "$pin"
"$py" -m pip install --no-index --find-links "$here/wheels" --constraint "$pin" "$@" "@PROJECT@"
echo "installed @PROJECT@ into $("$py" -c 'import sys; print(sys.prefix)'); torch $torch left as it was"
"""


def install_script(python_version: str, platform: str, project: str) -> str:
    """The bundle's install.sh for this Python, platform and project pin (e.g. ssrl==0.1.0)."""
    values = {"@PY@": python_version, "@PLATFORM@": platform, "@ARCH@": PLATFORM.fullmatch(platform)[2],
              "@PROJECT@": project}
    return re.sub("|".join(values), lambda m: values[m[0]], INSTALL_SH)


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar_xz(folder: Path, out: Path) -> None:
    """`folder` as out (.tar.xz), its files in name order under one top folder."""
    tmp = out.with_name(out.name + ".part")
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=XZ_FILTERS) as xz, \
            tarfile.open(fileobj=xz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(folder, arcname=folder.name, recursive=False, filter=_owned_by_root)
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"{folder.name}/{path.relative_to(folder)}", recursive=False, filter=_owned_by_root)
    tmp.replace(out)


def build(python_version: str, platform: str, out_dir: Path, have: dict[str, str] | None = None,
          slim: bool = True) -> Path:
    """Resolve, download, slim, write install.sh and compress; the path of the bundle."""
    tags = platform_tags(platform)
    name = f"{PROJECT}-bundle-{python_version}-{platform}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleError(f"--out {out_dir} cannot be created ({e.strerror}); pass --out DIR") from None
    with tempfile.TemporaryDirectory(prefix="ssrl-bundle-") as tmp:
        work = Path(tmp)
        print(f"building {PROJECT}'s wheel and resolving for Python {python_version} on {platform}", flush=True)
        project = build_project(work)
        version = project.name.split("-")[1]
        env, extra = target_env(python_version, platform), []
        for _ in range(3):  # a resolve per round of dependencies pip's markers left out
            pins, missing = needed(resolve([str(project), *extra], python_version, tags, work), PROJECT, env, have)
            if not missing:
                break
            extra += missing
        else:
            raise BundleError(f"the dependencies would not settle for Python {python_version} (still missing: "
                              f"{', '.join(missing)}); run scripts/bundle.py with Python {python_version}")
        pins.pop(PROJECT)
        print(f"downloading {len(pins)} wheels (left out: torch, what only torch needs"
              f"{', what --have lists' if have else ''})", flush=True)
        _pip(["download", "-q", "--no-deps", *_target(python_version, tags), "-d", str(work / "download"),
              *(f"{n}=={v}" for n, v in sorted(pins.items()))], "downloading the wheels")
        wheels = work / name / "wheels"
        wheels.mkdir(parents=True)
        for wheel in [project, *sorted((work / "download").glob("*.whl"))]:
            drop = RAY_UNUSED if slim and canonicalize_name(wheel.name.split("-")[0]) == "ray" else ()
            repack(wheel, wheels / wheel.name, drop)
        script = work / name / "install.sh"
        script.write_text(install_script(python_version, platform, f"{PROJECT}=={version}"))
        script.chmod(0o755)
        raw = sum(f.stat().st_size for f in wheels.iterdir())
        print(f"compressing {raw / 2**20:.0f} MiB of wheels with xz -9e (minutes)", flush=True)
        out = out_dir / f"{name}.tar.xz"
        write_tar_xz(work / name, out)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python-version", default=here, help=f"the GPU node's Python, X.Y (default: this one, {here})")
    p.add_argument("--platform", default=DEFAULT_PLATFORM,
                   help=f"the GPU node's wheel platform (default: {DEFAULT_PLATFORM}, what torch's Linux wheels need)")
    p.add_argument("--have", metavar="FILE",
                   help="the GPU node's `python -m pip list --format=freeze`: what it lists at a version that fits "
                        "is left out (default: the node has torch and nothing else)")
    p.add_argument("--out", default=str(ROOT / "dist"), help="folder for the bundle (default: dist/ of this checkout)")
    p.add_argument("--full-ray", action="store_true",
                   help="keep Ray whole: its Java workers' jars, RLlib, Serve, the LLM libraries, the dashboard's web client")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the bundle; 0 when written, 2 with one line on bad input or a failed step."""
    args = parse_args(argv)
    try:
        have = read_have(Path(args.have)) if args.have else None
        out = build(check_python(args.python_version), args.platform, Path(args.out), have, slim=not args.full_ray)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
