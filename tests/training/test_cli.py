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
    # Every column the CSV loader reads, split included.
    csv_help = (
        "csv:FILE (columns path, gender, optionally person_id, age, race, split, stem, "
        "face_x, face_y, face_w, face_h, majority_gender)"
    )
    assert csv_help in " ".join(train_help.split())


def test_prepare_without_archives_says_where_it_looked(tmp_path):
    result = run_cli("prepare", "--shared-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no *.tar.gz archives in {tmp_path}; --shared-dir names the folder that holds them"
    )


def test_unknown_data_format_is_a_usage_error(tmp_path):
    result = run_cli("train", "--data", "parquet:x", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "folder:DIR" in result.stderr


@pytest.fixture
def one_class_test_csv(tmp_path):
    """A CSV dataset of real photos whose test split holds women only, and two images without a face."""
    import cv2
    import numpy as np

    from tests.conftest import ROOT, read_fixture, write_labelled_variants

    woman = read_fixture("astronaut.jpg")
    man = cv2.imread(str(ROOT / "benchmarks" / "photos" / "camera.jpg"))
    rows = write_labelled_variants(tmp_path, "female", woman, ["train"] * 4 + ["val"] * 2 + ["test"] * 2)
    rows += write_labelled_variants(tmp_path, "male", man, ["train"] * 4 + ["val"] * 2)
    for i, split in enumerate(("train", "test")):  # flat grey: no detector finds a face there
        cv2.imwrite(str(tmp_path / f"none-{i}.jpg"), np.full((240, 320, 3), 90 + 60 * i, np.uint8))
        rows.append(f"none-{i}.jpg,female,{split}")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,gender,split\n" + "\n".join(rows) + "\n")
    return labels


@pytest.mark.slow
def test_train_evaluate_export_on_a_test_split_with_one_class(one_class_test_csv, tmp_path):
    """Train, evaluate and export a small real run: the counts printed are the data report's, the card is
    written although ROC AUC is undefined on a one-class test split, and the model names only a card it has."""
    run_dir, cache, no_shared = tmp_path / "run", tmp_path / "cache", tmp_path / "no-shared"
    no_shared.mkdir()
    common = ("--cache-dir", str(cache), "--shared-dir", str(no_shared), "--workers", "1")
    trained = run_cli(
        "train", "--data", f"csv:{one_class_test_csv}", "--epochs", "1", "--batch-size", "4", "--out", str(run_dir),
        *common,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    status = json.loads((run_dir / "data.json").read_text())["status"]
    assert status.get("no_face") == 2 and status.get("ok", 0) >= 12, status
    assert f"{status['ok']} with a face, 2 without, 0 unreadable" in trained.stdout

    early = tmp_path / "before-evaluate" / "model.onnx"
    exported = run_cli("export", str(run_dir / "best.keras"), "--out", str(early), *common)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads(early.with_suffix(".json").read_text())["card"] is None
    assert not (early.parent / "MODEL_CARD.md").exists() and "no model card" in exported.stdout

    evaluated = run_cli("evaluate", str(run_dir / "best.keras"), *common)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    card = (run_dir / "report" / "MODEL_CARD.md").read_text()
    (row,) = [line for line in card.splitlines() if line.startswith(f"| {one_class_test_csv.parent.name}_test |")]
    assert "| 2 |" in row and "| n/a |" in row  # two test faces, both women: no ROC AUC

    onnx_path = tmp_path / "model" / "model.onnx"
    exported = run_cli("export", str(run_dir / "best.keras"), "--out", str(onnx_path), *common)
    assert exported.returncode == 0, exported.stderr[-3000:]
    metadata = json.loads(onnx_path.with_suffix(".json").read_text())
    assert metadata["card"] == "MODEL_CARD.md"
    assert (onnx_path.parent / metadata["card"]).read_text() == card


@pytest.fixture
def small_folder_dataset(shared_datasets, tmp_path):
    """40 real adult faces per class in man/ and woman/ folders, taken from the utkface64 training archive
    (the external test archives would be held out of training, as they should)."""
    root = tmp_path / "faces"
    with tarfile.open(shared_datasets / "utkface64.tar.gz") as tar:
        taken = {"man": 0, "woman": 0}
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            fields = name.split("_")
            if not (member.isfile() and name.endswith(".jpg") and len(fields) > 3 and fields[0].isdigit()):
                continue
            folder = "woman" if fields[1] == "1" else "man"
            if int(fields[0]) >= 18 and taken[folder] < 40:
                (root / folder).mkdir(parents=True, exist_ok=True)
                (root / folder / name).write_bytes(tar.extractfile(member).read())
                taken[folder] += 1
    assert taken == {"man": 40, "woman": 40}
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

    # The card's external sets end to end at every margin, and the run's own figures as a leave-out run:
    # it never saw any shared population.
    evaluated = run_cli(
        "evaluate", str(run_dir / "best.keras"), "--limit", "12", "--leave-out", str(run_dir), *common,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    summary = evaluation["summary"]
    assert isinstance(evaluation["flip_average"], bool)
    assert set(summary["margins"]["celeba_wild"]) == {"0.1", "0.2", "0.25", "0.3", "0.4"}
    assert set(summary["margins"]["gender_dataset_face"]) == {"0.25"}
    wild = summary["sets"]["celeba_wild_end_to_end"]
    assert wild["n"] == 12 and 0.5 <= wild["detection_rate"] <= 1.0
    (left_out,) = summary["leave_out"]
    assert {"celeba_wild_end_to_end", "pixabay_portraits_end_to_end"} <= set(left_out["sets"])
    card = (run_dir / "report" / "MODEL_CARD.md").read_text()
    assert "## Results across sources" in card and "### Margin sensitivity" in card
    assert card.index("| celeba_wild | external, context |") < card.index("| faces | in-domain test split")

    onnx_path = tmp_path / "model.onnx"
    exported = run_cli("export", str(run_dir / "best.keras"), "--out", str(onnx_path), *common)
    assert exported.returncode == 0, exported.stderr[-2000:]
    metadata = json.loads(onnx_path.with_suffix(".json").read_text())
    assert metadata["parity"]["max_abs_diff"] <= 1e-4 and metadata["parity"]["faces"] > 0
    assert metadata["inference"]["flip_average"] is evaluation["flip_average"]
    assert metadata["input"]["crop"]["outside"] == "edge" and metadata["input"]["crop"]["align"] is True
    assert onnx_path.stat().st_size == metadata["size_bytes"]
