"""Build the deployable app folder with its mappers compiled: `make package` → build/app.

The mappers (`shared/normalize/mappers/`) are the largest share of normalize's cost. Compiled with mypyc from the
same typed sources, they take about half the time, and normalize about three quarters
(bench/normalize.py). A remote build cannot compile them, so this builds the folder that
`func azure functionapp publish <app> --no-build` uploads: the files `.funcignore` lets through, the
mappers as extension modules next to their sources (Python imports the extension first), and the
runtime dependencies in `.python_packages/lib/site-packages`. Extension modules load only where they
were built for, so the build refuses any platform but Linux x86-64 with CPython 3.11, and any module
that needs a newer glibc than the Functions Python 3.11 image has.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The mappers and the value helpers they call on every field (times, IPs, levels), which the other engines share.
COMPILED = ("shared/normalize/mappers/*.py", "shared/values.py")
# The Python of the Functions host (infra/ pins the same runtime version; tests/test_infra.py holds them equal).
PYTHON_VERSION = "3.11"
DEPENDENCIES = Path(".python_packages/lib/site-packages")
# The Functions Python 3.11 image is Debian 11 (bullseye); an extension needing a newer glibc fails to load.
HOST_GLIBC = (2, 31)
_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+)\.(\d+)")
_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.M)
# Every entry gets this time, so the same folder always zips to the same bytes (and the same SHA-256).
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class PackageError(RuntimeError):
    """The package cannot be built here; the message says why and what to do instead."""


def check_platform() -> None:
    """Extension modules are bound to the platform they are built on: it must be the Functions host's."""
    if sys.platform != "linux" or platform.machine() != "x86_64" or platform.python_version_tuple()[:2] != tuple(
            PYTHON_VERSION.split(".")):
        raise PackageError(
            f"compiled packages are built on Linux x86-64 with CPython {PYTHON_VERSION} (this is {sys.platform} "
            f"{platform.machine()}, Python {platform.python_version()}): build in CI, or deploy with a "
            "remote build (`func azure functionapp publish <app>` from the repository)")


def ignore_patterns(root: Path) -> list[str]:
    """The patterns of `.funcignore`: what `func azure functionapp publish` leaves out of the app."""
    lines = (root / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def deployed_files(root: Path, patterns: list[str]) -> Iterator[Path]:
    """Files under `root` that no pattern leaves out; `name/` patterns match folders, others any name."""
    folders = [pattern.rstrip("/") for pattern in patterns if pattern.endswith("/")]
    names = [pattern for pattern in patterns if not pattern.endswith("/")]

    def kept(name: str, patterns: list[str]) -> bool:
        return not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if kept(name, folders) and kept(name, names))
        for name in sorted(files):
            if kept(name, names):
                yield Path(folder, name).relative_to(root)


def copy_app(root: Path, out: Path) -> None:
    """Copy what a deployment carries into `out` (emptied first)."""
    if out.exists():
        shutil.rmtree(out)
    for relative in deployed_files(root, ignore_patterns(root)):
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, out / relative)


def compile_mappers(out: Path) -> list[Path]:
    """mypyc over the mappers in `out`, in place; the C sources and caches it leaves are removed."""
    sources = sorted(str(path.relative_to(out)) for pattern in COMPILED for path in out.glob(pattern))
    run = subprocess.run([sys.executable, "-m", "mypyc", *sources],  # noqa: S603 - our own fixed command
                         cwd=out, capture_output=True, text=True, check=False)
    shutil.rmtree(out / "build", ignore_errors=True)
    shutil.rmtree(out / ".mypy_cache", ignore_errors=True)
    if run.returncode != 0:
        raise PackageError(f"mypyc failed (a C compiler and the Python 3.11 headers are needed):\n"
                           f"{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return sorted(out.glob("*.so")) + sorted(path for pattern in COMPILED
                                             for path in out.glob(pattern.replace(".py", ".*.so")))


def newest_glibc(extension: Path) -> tuple[int, int]:
    """The newest glibc symbol version an extension module needs (its ELF version references)."""
    versions = [(int(major), int(minor)) for major, minor in _GLIBC_VERSION.findall(extension.read_bytes())]
    return max(versions, default=(0, 0))


def check_glibc(extensions: list[Path]) -> None:
    for extension in extensions:
        needed = newest_glibc(extension)
        if needed > HOST_GLIBC:
            raise PackageError(
                f"{extension.name} needs glibc {needed[0]}.{needed[1]}, newer than the Functions host's "
                f"{HOST_GLIBC[0]}.{HOST_GLIBC[1]}: build on an older distribution (Debian 11, Ubuntu 20.04)")


def install_dependencies(out: Path) -> None:
    """The runtime pins as manylinux wheels for CPython 3.11, where the Functions host looks for them."""
    subprocess.run(  # noqa: S603 - our own fixed command
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
         "--python-version", PYTHON_VERSION,
         "--implementation", "cp", "--target", str(out / DEPENDENCIES), "-r", str(out / "requirements.txt")],
        check=True)


def build(out: Path, *, dependencies: bool = True) -> list[Path]:
    """The whole package in `out`; returns the compiled extension modules."""
    check_platform()
    copy_app(REPO, out)
    extensions = compile_mappers(out)
    check_glibc(extensions)
    if dependencies:
        install_dependencies(out)
    return extensions


def release_version(root: Path) -> str:
    """The version kept in `shared/__init__.py` (read as text: the builder does not import the app)."""
    found = _VERSION.search((root / "shared" / "__init__.py").read_text())
    if found is None:
        raise PackageError("shared/__init__.py does not set __version__")
    return found.group(1)


def write_zip(folder: Path, archive: Path) -> str:
    """Zip `folder` reproducibly (sorted entries, fixed times) and write `<archive>.sha256`; returns the digest."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                entry = zipfile.ZipInfo(str(path.relative_to(folder)), _ZIP_TIME)
                entry.external_attr = (path.stat().st_mode & 0o777) << 16
                entry.compress_type = zipfile.ZIP_DEFLATED
                bundle.writestr(entry, path.read_bytes())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "app")
    parser.add_argument("--no-dependencies", action="store_true",
                        help="leave out .python_packages (benchmarks and tests use the virtual env's)")
    args = parser.parse_args()
    out = args.out.resolve()
    try:
        extensions = build(out, dependencies=not args.no_dependencies)
        version = release_version(REPO)
    except PackageError as error:
        sys.exit(f"package: {error}")
    print(f"package: {args.out} with {len(extensions)} compiled modules; deploy it with "
          f"`cd {args.out} && func azure functionapp publish <app> --no-build`")
    if not args.no_dependencies:
        archive = out.parent / f"stormwatch-{version}.zip"
        digest = write_zip(out, archive)
        print(f"package: {archive} (sha256 {digest}); or deploy the zip itself with "
              f"`az functionapp deployment source config-zip -g <rg> -n <app> --src {archive.name}`")


if __name__ == "__main__":
    main()
