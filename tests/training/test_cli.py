import csv
import json
import subprocess
import sys
import tarfile

import pytest

pytestmark = pytest.mark.train


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "training", *args], capture_output=True, text=True, timeout=600, cwd=cwd, check=False
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("prepare", "train", "sweep", "evaluate", "export"):
        assert command in result.stdout
    train_help = run_cli("train", "--help").stdout
    for option in ("--data", "--arch", "--epochs", "--out", "folder:DIR", "celeba:DIR", "imdb:MAT"):
        assert option in train_help


def test_unknown_data_format_is_a_usage_error(tmp_path):
    result = run_cli("train", "--data", "parquet:x", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "folder:DIR" in result.stderr


@pytest.fixture
def small_folder_dataset(shared_datasets, tmp_path):
    """40 real faces per class in man/ and woman/ folders, taken from the external test archive."""
    root = tmp_path / "faces"
    with tarfile.open(shared_datasets / "gender_dataset_face.tar.gz") as tar:
        taken = {"man": 0, "woman": 0}
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[1] in taken and taken[parts[1]] < 40:
                (root / parts[1]).mkdir(parents=True, exist_ok=True)
                (root / parts[1] / parts[2]).write_bytes(tar.extractfile(member).read())
                taken[parts[1]] += 1
    return root


@pytest.mark.data
@pytest.mark.slow
def test_train_then_export_from_the_command_line(small_folder_dataset, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    common = ("--cache-dir", str(cache), "--workers", "1")
    trained = run_cli(
        "train", "--data", f"folder:{small_folder_dataset}", "--arch", "mini_xception", "--epochs", "2",
        "--out", str(run_dir), *common,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (run_dir / "best.keras").is_file()
    with (run_dir / "log.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    report = json.loads((run_dir / "data.json").read_text())
    assert report["images"] == 80
    assert sum(report[s]["images"] for s in ("train", "val", "test")) == 80

    onnx_path = tmp_path / "model.onnx"
    exported = run_cli("export", str(run_dir / "best.keras"), "--out", str(onnx_path), *common)
    assert exported.returncode == 0, exported.stderr[-2000:]
    metadata = json.loads(onnx_path.with_suffix(".json").read_text())
    assert metadata["parity"]["max_abs_diff"] <= 1e-4 and metadata["parity"]["faces"] > 0
    assert onnx_path.stat().st_size == metadata["size_bytes"]
