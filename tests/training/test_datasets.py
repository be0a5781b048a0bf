"""Tests for training.datasets: every loader on a tiny fixture written in its dataset's real on-disk format."""

from __future__ import annotations

import os
import random
import re
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import loadmat, savemat

from training.datasets import (
    SPEC_FORMATS,
    DatasetError,
    Sample,
    assign_splits,
    hold_out,
    keep_adults,
    load_celeba,
    load_folder,
    load_imdb_wiki,
    load_labels_csv,
    load_spec,
    load_utkface,
)


def write_image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((6, 5, 3), value, dtype=np.uint8)
    pixels[0, 0] = (0, 0, 255)
    assert cv2.imwrite(str(path), pixels)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def by_name(samples: list[Sample]) -> dict[str, Sample]:
    return {s.path.name: s for s in samples}


def make_tar_gz(archive: Path, source: Path) -> Path:
    """Pack ``source`` as the archive's single top folder, like the shared archives."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


# load_folder


def test_load_folder_male_female(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    write_image(root / "male" / "a.jpg")
    write_image(root / "male" / "b.png")
    write_image(root / "male" / "c.JPG")
    write_image(root / "female" / "d.jpg")
    write_image(root / "female" / "nested" / "e.jpeg")
    write_text(root / "female" / "notes.txt", "not an image")
    write_text(root / "male" / "Thumbs.db", "")
    write_image(root / "unlabelled" / "x.jpg")
    write_image(root / "top_level.jpg")

    samples = load_folder(root)

    assert {s.path.name: s.gender for s in samples} == {
        "a.jpg": "male",
        "b.png": "male",
        "c.JPG": "male",
        "d.jpg": "female",
        "e.jpeg": "female",
    }
    assert all(s.path.is_file() and s.path.is_relative_to(root) for s in samples)
    assert {s.source for s in samples} == {"faces"}
    assert all(s.person_id is None and s.age is None and s.split is None and s.region is None for s in samples)
    assert by_name(samples)["a.jpg"].label == 1
    assert by_name(samples)["d.jpg"].label == 0


@pytest.mark.parametrize(
    ("male_dir", "female_dir"),
    [("man", "woman"), ("Man", "Woman"), ("MEN", "Women"), ("Male", "FEMALE"), ("males", "females"), ("m", "f")],
)
def test_load_folder_folder_name_variants(tmp_path: Path, male_dir: str, female_dir: str) -> None:
    write_image(tmp_path / male_dir / "face_0.jpg")
    write_image(tmp_path / male_dir / "face_1.jpg")
    write_image(tmp_path / female_dir / "face_2.png")

    samples = load_folder(tmp_path, source="crawl")

    assert sorted((s.path.name, s.gender) for s in samples) == [
        ("face_0.jpg", "male"),
        ("face_1.jpg", "male"),
        ("face_2.png", "female"),
    ]
    assert {s.source for s in samples} == {"crawl"}


def test_load_folder_without_class_folders_raises(tmp_path: Path) -> None:
    write_image(tmp_path / "top.jpg")
    write_image(tmp_path / "faces" / "a.jpg")
    write_image(tmp_path / "people" / "b.jpg")
    with pytest.raises(DatasetError, match="no male/female"):
        load_folder(tmp_path)


def test_load_folder_class_folders_without_images_raise(tmp_path: Path) -> None:
    write_text(tmp_path / "male" / "readme.txt", "empty")
    (tmp_path / "female").mkdir()
    with pytest.raises(DatasetError):
        load_folder(tmp_path)


# load_labels_csv


def test_load_labels_csv_shared_celeba_format(tmp_path: Path) -> None:
    root = tmp_path / "celeba_gender"
    write_image(root / "male" / "090544.jpg")
    write_image(root / "female" / "000001.jpg")
    csv_path = write_text(
        root / "labels.csv",
        "path,gender,person_id,source_split\n"
        "male/090544.jpg,male,2880,Train\n"
        "female/000001.jpg,female,2937,Validation\n",
    )

    samples = load_labels_csv(csv_path)

    assert [s.path for s in samples] == [root / "male" / "090544.jpg", root / "female" / "000001.jpg"]
    assert all(s.path.is_file() for s in samples)
    assert [s.gender for s in samples] == ["male", "female"]
    assert [s.person_id for s in samples] == ["2880", "2937"]
    assert {s.source for s in samples} == {"celeba_gender"}
    # The redistributor's split is not person-disjoint, so it must not become the sample's split.
    assert all(s.split is None and s.age is None and s.race is None for s in samples)


def test_load_labels_csv_shared_utkface_format(tmp_path: Path) -> None:
    root = tmp_path / "utkface64"
    csv_path = write_text(
        root / "labels.csv",
        "path,gender,age,race\n"
        "UTKFace/100_0_0_20170112213500903.jpg.chip.jpg,male,100,White\n"
        "UTKFace/26_1_2_20170116184534458.jpg.chip.jpg,female,26,Asian\n"
        "UTKFace/9_1_4_20170103200814791.jpg.chip.jpg,female,9.0,Others\n",
    )

    samples = load_labels_csv(csv_path, source="utk")

    assert samples[0].path == root / "UTKFace" / "100_0_0_20170112213500903.jpg.chip.jpg"
    assert [(s.gender, s.age, s.race) for s in samples] == [
        ("male", 100, "White"),
        ("female", 26, "Asian"),
        ("female", 9, "Others"),
    ]
    assert all(type(s.age) is int for s in samples)
    assert {s.source for s in samples} == {"utk"}
    assert all(s.person_id is None for s in samples)


def test_load_labels_csv_minimal_columns_and_empty_optional_values(tmp_path: Path) -> None:
    csv_path = write_text(
        tmp_path / "set" / "labels.csv",
        "path,gender\nimg/a.jpg,male\nimg/b.jpg,female\n",
    )
    samples = load_labels_csv(csv_path)
    assert [(s.path, s.gender) for s in samples] == [
        (tmp_path / "set" / "img" / "a.jpg", "male"),
        (tmp_path / "set" / "img" / "b.jpg", "female"),
    ]
    assert all(s.person_id is None and s.age is None and s.race is None for s in samples)

    csv_path = write_text(tmp_path / "blanks.csv", "path,gender,person_id,age,race\na.jpg,m,,,\n")
    (sample,) = load_labels_csv(csv_path)
    assert (sample.person_id, sample.age, sample.race) == (None, None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("male", "male"),
        ("female", "female"),
        ("man", "male"),
        ("woman", "female"),
        ("m", "male"),
        ("f", "female"),
        ("Male", "male"),
        ("WOMAN", "female"),
        (" F ", "female"),
    ],
)
def test_load_labels_csv_gender_values(tmp_path: Path, value: str, expected: str) -> None:
    csv_path = write_text(tmp_path / "labels.csv", f"path,gender\na.jpg,{value}\n")
    assert [s.gender for s in load_labels_csv(csv_path)] == [expected]


@pytest.mark.parametrize(
    ("header", "missing"),
    [("path,sex", "gender"), ("file,gender", "path"), ("image,label", "gender, path")],
)
def test_load_labels_csv_missing_column_is_named(tmp_path: Path, header: str, missing: str) -> None:
    csv_path = write_text(tmp_path / "labels.csv", f"{header}\na.jpg,male\n")
    with pytest.raises(DatasetError, match=f"missing column\\(s\\) {missing}$"):
        load_labels_csv(csv_path)


def test_load_labels_csv_unknown_gender_names_the_line(tmp_path: Path) -> None:
    csv_path = write_text(
        tmp_path / "labels.csv",
        "path,gender\na.jpg,male\nb.jpg,female\nc.jpg,unknown\nd.jpg,male\n",
    )
    with pytest.raises(DatasetError, match=re.escape(f"{csv_path}:4: unknown gender value 'unknown'")):
        load_labels_csv(csv_path)


def test_load_labels_csv_line_number_counts_blank_lines(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "labels.csv", "path,gender\na.jpg,male\n\nc.jpg,other\n")
    with pytest.raises(DatasetError, match=re.escape(f"{csv_path}:4:")):
        load_labels_csv(csv_path)


def test_load_labels_csv_reads_split_column(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "labels.csv", "path,gender,split\na.jpg,male,test\nb.jpg,female,val\n")
    assert [s.split for s in load_labels_csv(csv_path)] == ["test", "val"]


def test_load_labels_csv_reads_the_face_box_as_the_region_hint(tmp_path: Path) -> None:
    # celeba_wild's columns: the one labelled face of a whole photo.
    text = "path,gender,face_x,face_y,face_w,face_h\na.jpg,male,174,54,84,114\nb.jpg,female,,,,\n"
    samples = load_labels_csv(write_text(tmp_path / "labels.csv", text))
    assert [s.region for s in samples] == [(174, 54, 258, 168), None]


def test_load_labels_csv_refuses_a_face_box_that_is_not_numbers(tmp_path: Path) -> None:
    text = "path,gender,face_x,face_y,face_w,face_h\na.jpg,male,1,2,wide,4\n"
    with pytest.raises(DatasetError, match=r"labels\.csv:2: face_x"):
        load_labels_csv(write_text(tmp_path / "labels.csv", text))


# load_utkface

UTKFACE_VALID = {
    "25_0_2_20170116174525125.jpg.chip.jpg": (25, "male", "Asian"),
    "100_1_0_20170112213001988.jpg.chip.jpg": (100, "female", "White"),
    "1_1_4_20161221193016140.jpg.chip.jpg": (1, "female", "Others"),
    "34_0_1_20170117134553373.jpg.chip.jpg": (34, "male", "Black"),
    "54_0_3_20170119210028547.jpg": (54, "male", "Indian"),
    "8_1_0_20170109201626785.jpg": (8, "female", "White"),
}
# Names from the real release that lack the race field.
UTKFACE_MALFORMED = (
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
)


def test_load_utkface_parses_names_and_skips_malformed(tmp_path: Path) -> None:
    root = tmp_path / "utkface64"
    for name in UTKFACE_VALID:
        write_image(root / "UTKFace" / name)
    for name in UTKFACE_MALFORMED:
        write_image(root / "UTKFace" / name)
    write_text(root / "labels.csv", "path,gender\n")
    write_text(root / "UTKFace" / "25_0_2_20170116174525125.txt", "")

    samples = load_utkface(root)

    assert {name: (s.age, s.gender, s.race) for name, s in by_name(samples).items()} == UTKFACE_VALID
    assert all(type(s.age) is int for s in samples)
    assert all(s.source == "utkface" and s.path.is_file() and s.person_id is None for s in samples)
    assert by_name(samples)["25_0_2_20170116174525125.jpg.chip.jpg"].path == (
        root / "UTKFace" / "25_0_2_20170116174525125.jpg.chip.jpg"
    )


def test_load_utkface_without_matching_names_raises(tmp_path: Path) -> None:
    for name in UTKFACE_MALFORMED:
        write_image(tmp_path / name)
    write_image(tmp_path / "face_0.jpg")
    with pytest.raises(DatasetError, match="UTKFace"):
        load_utkface(tmp_path)


# load_celeba

CELEBA_HEADER = (
    "image_id,5_o_Clock_Shadow,Arched_Eyebrows,Attractive,Bags_Under_Eyes,Bald,Bangs,Big_Lips,Big_Nose,Black_Hair,"
    "Blond_Hair,Blurry,Brown_Hair,Bushy_Eyebrows,Chubby,Double_Chin,Eyeglasses,Goatee,Gray_Hair,Heavy_Makeup,"
    "High_Cheekbones,Male,Mouth_Slightly_Open,Mustache,Narrow_Eyes,No_Beard,Oval_Face,Pale_Skin,Pointy_Nose,"
    "Receding_Hairline,Rosy_Cheeks,Sideburns,Smiling,Straight_Hair,Wavy_Hair,Wearing_Earrings,Wearing_Hat,"
    "Wearing_Lipstick,Wearing_Necklace,Wearing_Necktie,Young"
)
CELEBA_ATTRIBUTES = CELEBA_HEADER.split(",")[1:]
# image_id: (Male, partition, identity)
CELEBA_ROWS = {
    "000001.jpg": ("-1", "0", "2880"),
    "000002.jpg": ("-1", "0", "2937"),
    "000003.jpg": ("1", "0", "8692"),
    "162771.jpg": ("1", "1", "2880"),
    "182638.jpg": ("-1", "2", "9295"),
}


def write_celeba(root: Path, nested: bool = False, identities: bool = True, partitions: bool = True) -> Path:
    images = root / "img_align_celeba"
    if nested:
        images = images / "img_align_celeba"
    lines = [CELEBA_HEADER]
    for image_id, (male, _, _) in CELEBA_ROWS.items():
        write_image(images / image_id)
        opposite = "1" if male == "-1" else "-1"
        values = [male if name == "Male" else opposite for name in CELEBA_ATTRIBUTES]
        lines.append(",".join([image_id, *values]))
    write_text(root / "list_attr_celeba.csv", "\n".join(lines) + "\n")
    if partitions:
        rows = "".join(f"{image_id},{p}\n" for image_id, (_, p, _) in CELEBA_ROWS.items())
        write_text(root / "list_eval_partition.csv", "image_id,partition\n" + rows)
    if identities:
        write_text(
            root / "identity_CelebA.txt", "".join(f"{image_id} {i}\n" for image_id, (_, _, i) in CELEBA_ROWS.items())
        )
    return images


@pytest.mark.parametrize("nested", [False, True], ids=["native", "kaggle-nested"])
def test_load_celeba(tmp_path: Path, nested: bool) -> None:
    images = write_celeba(tmp_path, nested=nested)

    samples = load_celeba(tmp_path)

    assert [s.path for s in samples] == [images / image_id for image_id in CELEBA_ROWS]
    assert all(s.path.is_file() for s in samples)
    assert {s.path.name: (s.gender, s.split, s.person_id) for s in samples} == {
        "000001.jpg": ("female", "train", "2880"),
        "000002.jpg": ("female", "train", "2937"),
        "000003.jpg": ("male", "train", "8692"),
        "162771.jpg": ("male", "val", "2880"),
        "182638.jpg": ("female", "test", "9295"),
    }
    assert {s.source for s in samples} == {"celeba"}


def test_load_celeba_without_identity_and_partition_files(tmp_path: Path) -> None:
    write_celeba(tmp_path, identities=False, partitions=False)
    samples = load_celeba(tmp_path)
    assert [s.gender for s in samples] == ["female", "female", "male", "male", "female"]
    assert all(s.person_id is None and s.split is None for s in samples)


def test_load_celeba_without_attribute_file_raises(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    (tmp_path / "list_attr_celeba.csv").unlink()
    with pytest.raises(DatasetError, match=r"list_attr_celeba\.csv not found"):
        load_celeba(tmp_path)


# load_imdb_wiki

IMDB_ROWS = [
    # full_path, gender, face_score, second_face_score, face_location, celeb_id
    ("01/nm0000001_rm124825600_1899-5-10_1968.jpg", 1.0, 1.4597, np.nan, (111.29, 111.29, 252.67, 252.67), 6488),
    ("01/nm0000001_rm3343756032_1899-5-10_1970.jpg", 0.0, 2.5431, np.nan, (622.89, 424.21, 844.33, 645.65), 6488),
    ("02/nm0000002_rm1346607872_1924-9-16_2004.jpg", np.nan, 3.4558, np.nan, (1, 1, 634, 440), 11516),
    ("02/nm0000002_rm1363385088_1924-9-16_2004.jpg", 0.0, -np.inf, np.nan, (1, 1, 1, 1), 11516),
    ("03/nm0000003_rm1037026816_1934-9-28_1976.jpg", 0.0, 0.6, np.nan, (10, 20, 30, 40), 8451),
    ("03/nm0000003_rm1055803904_1934-9-28_1960.jpg", 1.0, 4.0, 1.1183, (48.7, 83.5, 123.2, 158.1), 8451),
    ("04/nm0000004_rm1029099520_1949-1-24_1981.jpg", 1.0, 1.0, np.nan, (5.5, 6.4, 99.5, 120.6), 2),
]


def write_imdb_mat(path: Path, key: str = "imdb", rows: list[tuple] = IMDB_ROWS, with_celeb: bool = True) -> Path:
    """A metadata file laid out like MATLAB's imdb.mat / wiki.mat: one struct of 1xN fields and cells."""
    n = len(rows)

    def cell(values: list) -> np.ndarray:
        out = np.empty((1, n), dtype=object)
        for i, value in enumerate(values):
            out[0, i] = value
        return out

    fields = {
        "dob": np.array([[693726.0 + i for i in range(n)]]),
        "photo_taken": np.array([[1968.0 + i for i in range(n)]]),
        "full_path": cell([r[0] for r in rows]),
        "gender": np.array([[r[1] for r in rows]], dtype=float),
        "name": cell([f"Person {r[5]}" for r in rows]),
        "face_location": cell([np.array([r[4]], dtype=float) for r in rows]),
        "face_score": np.array([[r[2] for r in rows]], dtype=float),
        "second_face_score": np.array([[r[3] for r in rows]], dtype=float),
    }
    if with_celeb:
        names = sorted({f"Person {r[5]}" for r in rows})
        fields["celeb_names"] = np.array([names], dtype=object)
        fields["celeb_id"] = np.array([[float(r[5]) for r in rows]])
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {key: fields})
    for row in rows:
        write_image(path.parent / row[0])
    return path


def test_imdb_fixture_has_matlab_layout(tmp_path: Path) -> None:
    meta = loadmat(write_imdb_mat(tmp_path / "imdb.mat"))["imdb"][0, 0]
    assert meta["gender"][0].shape == (len(IMDB_ROWS),)
    assert np.isnan(meta["gender"][0][2])
    assert str(meta["full_path"][0][0][0]) == IMDB_ROWS[0][0]
    assert meta["face_location"][0][0].shape == (1, 4)
    assert np.isneginf(meta["face_score"][0][3])
    assert "celeb_id" in meta.dtype.names


def test_load_imdb_filters_and_maps(tmp_path: Path) -> None:
    mat = write_imdb_mat(tmp_path / "imdb_crop" / "imdb.mat")

    samples = load_imdb_wiki(mat)

    assert [s.path for s in samples] == [mat.parent / IMDB_ROWS[i][0] for i in (0, 1, 6)]
    assert all(s.path.is_file() for s in samples)
    assert [s.gender for s in samples] == ["male", "female", "male"]
    assert [s.region for s in samples] == [(111, 111, 253, 253), (623, 424, 844, 646), (6, 6, 100, 121)]
    assert [s.person_id for s in samples] == ["6488", "6488", "2"]
    assert {s.source for s in samples} == {"imdb"}
    assert all(s.split is None and s.age is None for s in samples)


def test_load_imdb_thresholds(tmp_path: Path) -> None:
    mat = write_imdb_mat(tmp_path / "imdb.mat")

    loose = load_imdb_wiki(mat, min_face_score=0.0, max_second_face_score=2.0)
    strict = load_imdb_wiki(mat, min_face_score=2.0)

    # NaN gender and -inf face score stay out whatever the thresholds.
    assert [s.path.name for s in loose] == [Path(IMDB_ROWS[i][0]).name for i in (0, 1, 4, 5, 6)]
    assert [s.path.name for s in strict] == [Path(IMDB_ROWS[1][0]).name]


def test_load_wiki_without_celeb_ids(tmp_path: Path) -> None:
    rows = [
        ("17/10000217_1981-05-05_2009.jpg", 1.0, 4.3009, np.nan, (111.29, 111.29, 252.67, 252.67), 0),
        ("48/10000548_1925-04-04_1964.jpg", 1.0, 2.6456, 1.9492, (114.96, 114.96, 258.66, 258.66), 0),
        ("12/100012_1948-07-03_2008.jpg", 0.0, 4.3294, np.nan, (1, 1, 634, 440), 0),
        ("65/10001965_1930-05-23_1961.jpg", np.nan, 2.1, np.nan, (1, 1, 10, 10), 0),
        ("33/10002033_1941-02-11_2011.jpg", 0.0, np.nan, np.nan, (1, 1, 10, 10), 0),
    ]
    mat = write_imdb_mat(tmp_path / "wiki_crop" / "wiki.mat", key="wiki", rows=rows, with_celeb=False)

    samples = load_imdb_wiki(mat)

    assert [(s.path, s.gender, s.region) for s in samples] == [
        (mat.parent / "17" / "10000217_1981-05-05_2009.jpg", "male", (111, 111, 253, 253)),
        (mat.parent / "12" / "100012_1948-07-03_2008.jpg", "female", (1, 1, 634, 440)),
    ]
    assert all(s.source == "wiki" and s.person_id is None for s in samples)


def test_load_imdb_wiki_without_known_struct_raises(tmp_path: Path) -> None:
    mat = tmp_path / "other.mat"
    savemat(mat, {"faces": {"gender": np.array([[1.0]])}})
    with pytest.raises(DatasetError, match="'imdb' or 'wiki'"):
        load_imdb_wiki(mat)


# assign_splits


def person_samples(persons: int = 300, images: int = 3, source: str = "celeba") -> list[Sample]:
    return [
        Sample(Path(f"celeba/{p:06d}_{k}.jpg"), "male" if p % 2 else "female", source, person_id=str(p))
        for p in range(persons)
        for k in range(images)
    ]


def test_assign_splits_keeps_persons_together_in_rough_proportions() -> None:
    samples = assign_splits(person_samples())

    splits_by_person: dict[str, set[str]] = {}
    for s in samples:
        splits_by_person.setdefault(s.person_id or "", set()).add(s.split or "")
    assert all(len(splits) == 1 for splits in splits_by_person.values())
    counts = Counter(next(iter(splits)) for splits in splits_by_person.values())
    assert set(counts) == {"train", "val", "test"}
    assert 0.72 <= counts["train"] / 300 <= 0.88
    assert 0.05 <= counts["val"] / 300 <= 0.15
    assert 0.05 <= counts["test"] / 300 <= 0.15
    assert [replace(s, split=None) for s in samples] == person_samples()


def test_assign_splits_is_deterministic_and_independent_of_other_samples() -> None:
    full = {s.path: s.split for s in assign_splits(person_samples())}
    assert {s.path: s.split for s in assign_splits(person_samples())} == full

    subset = [s for s in person_samples() if int(s.person_id or 0) % 7 == 3]
    random.Random(0).shuffle(subset)
    assigned = assign_splits(subset)
    assert [s.path for s in assigned] == [s.path for s in subset]
    assert all(s.split == full[s.path] for s in assigned)


def test_assign_splits_without_person_id_hashes_file_name() -> None:
    samples = [
        Sample(Path(f"utkface64/UTKFace/{i}_0_0_2017011{i}.jpg.chip.jpg"), "male", "utkface") for i in range(600)
    ]
    first = assign_splits(samples)
    again = assign_splits(samples[::-1])
    assert {s.path: s.split for s in first} == {s.path: s.split for s in again}
    counts = Counter(s.split for s in first)
    assert 0.05 <= counts["test"] / 600 <= 0.15
    assert 0.05 <= counts["val"] / 600 <= 0.15
    moved = [Sample(Path("elsewhere") / s.path.name, s.gender, s.source) for s in samples]
    assert [s.split for s in assign_splits(moved)] == [s.split for s in first]


def test_assign_splits_keeps_preset_split() -> None:
    samples = person_samples(persons=50, images=1)
    computed = assign_splits(samples)
    preset = [Sample(s.path, s.gender, s.source, s.person_id, split="val") for s in samples]

    kept = assign_splits(preset)

    assert any(s.split != "val" for s in computed)
    assert [s.split for s in kept] == ["val"] * 50


@pytest.mark.parametrize(("val", "test", "expected"), [(0.0, 0.0, {"train"}), (0.5, 0.5, {"val", "test"})])
def test_assign_splits_fractions(val: float, test: float, expected: set[str]) -> None:
    assert {s.split for s in assign_splits(person_samples(persons=100, images=1), val=val, test=test)} == expected


# keep_adults


def test_keep_adults() -> None:
    ages = [None, 0, 1, 12, 13, 14, 40, None, 116]
    samples = [Sample(Path(f"{i}.jpg"), "male", "utkface", age=age) for i, age in enumerate(ages)]
    assert [s.age for s in keep_adults(samples)] == [None, 13, 14, 40, None, 116]
    assert [s.age for s in keep_adults(samples, min_age=18)] == [None, 40, None, 116]


# load_spec


def write_labelled_folder(folder: Path, rows: list[tuple[str, str]]) -> Path:
    for path, _ in rows:
        write_image(folder / path)
    write_text(folder / "labels.csv", "path,gender\n" + "".join(f"{p},{g}\n" for p, g in rows))
    return folder


def test_load_spec_unknown_format_lists_formats(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown data format 'zip'") as error:
        load_spec(f"zip:{tmp_path}", tmp_path / "cache", tmp_path)
    assert all(name in str(error.value) for name in SPEC_FORMATS)


def test_load_spec_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_spec(f"folder:{tmp_path / 'nowhere'}", tmp_path / "cache", tmp_path)


@pytest.mark.parametrize("kind", ["folder", "csv", "utkface", "celeba", "imdb", "wiki"])
def test_load_spec_dispatches_by_format(tmp_path: Path, kind: str) -> None:
    if kind == "folder":
        write_image(tmp_path / "man" / "a.jpg")
        target, source = tmp_path, tmp_path.name
    elif kind == "csv":
        target = write_labelled_folder(tmp_path / "mine", [("a.jpg", "male")]) / "labels.csv"
        source = "mine"
    elif kind == "utkface":
        write_image(tmp_path / "25_0_2_20170116174525125.jpg.chip.jpg")
        target, source = tmp_path, "utkface"
    elif kind == "celeba":
        write_celeba(tmp_path)
        target, source = tmp_path, "celeba"
    else:
        target = write_imdb_mat(tmp_path / f"{kind}.mat", key=kind, with_celeb=kind == "imdb")
        source = kind

    samples = load_spec(f"{kind}:{target}", tmp_path / "cache", tmp_path)

    assert samples
    assert {s.source for s in samples} == {source}
    assert not (tmp_path / "cache").exists()


def test_load_spec_archive_extracts_once(tmp_path: Path) -> None:
    source = write_labelled_folder(
        tmp_path / "src" / "mini_faces",
        [("images/a.jpg", "male"), ("images/b.jpg", "female"), ("images/c.png", "woman")],
    )
    archive = make_tar_gz(tmp_path / "mini_faces.tar.gz", source)
    cache = tmp_path / "cache"
    extracted = cache / "datasets" / "mini_faces"

    samples = load_spec(f"archive:{archive}", cache, tmp_path / "shared")

    assert [(s.path, s.gender) for s in samples] == [
        (extracted / "images" / "a.jpg", "male"),
        (extracted / "images" / "b.jpg", "female"),
        (extracted / "images" / "c.png", "female"),
    ]
    assert all(s.path.is_file() and s.source == "mini_faces" for s in samples)
    marker = cache / "datasets" / ".mini_faces.extracted"
    assert marker.is_file()

    (extracted / "images" / "a.jpg").unlink()
    again = load_spec(f"archive:{archive}", cache, tmp_path / "shared")
    assert again == samples
    assert not (extracted / "images" / "a.jpg").exists()

    stat = archive.stat()
    os.utime(archive, (stat.st_atime, stat.st_mtime + 10))
    load_spec(f"archive:{archive}", cache, tmp_path / "shared")
    assert (extracted / "images" / "a.jpg").is_file()


def test_load_spec_archive_with_class_folders(tmp_path: Path) -> None:
    source = tmp_path / "src" / "gender_dataset_face"
    write_image(source / "man" / "face_0.jpg")
    write_image(source / "woman" / "face_1.jpg")
    archive = make_tar_gz(tmp_path / "gender_dataset_face.tar.gz", source)

    samples = load_spec(f"archive:{archive}", tmp_path / "cache", tmp_path)

    assert [(s.path.name, s.gender, s.source) for s in samples] == [
        ("face_0.jpg", "male", "gender_dataset_face"),
        ("face_1.jpg", "female", "gender_dataset_face"),
    ]


def test_load_spec_archive_packed_without_folder_entries(tmp_path: Path) -> None:
    # The shared gender_dataset_face.tar.gz lists only files ("gender_dataset_face/man/face_0.jpg"), no folders.
    source = tmp_path / "src" / "gender_dataset_face"
    write_image(source / "man" / "face_0.jpg")
    write_image(source / "woman" / "face_1.jpg")
    archive = tmp_path / "gender_dataset_face.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source.rglob("*.jpg")):
            tar.add(path, arcname=str(path.relative_to(source.parent)), recursive=False)

    samples = load_spec(f"archive:{archive}", tmp_path / "cache", tmp_path)

    assert [(s.path.name, s.gender) for s in samples] == [("face_0.jpg", "male"), ("face_1.jpg", "female")]
    assert samples[0].path.parent.parent == tmp_path / "cache" / "datasets" / "gender_dataset_face"


def test_load_spec_archive_top_folder_named_differently(tmp_path: Path) -> None:
    source = write_labelled_folder(tmp_path / "src" / "faces", [("a.jpg", "male")])
    archive = make_tar_gz(tmp_path / "faces-v2.tar.gz", source)
    samples = load_spec(f"archive:{archive}", tmp_path / "cache", tmp_path)
    assert [(s.path.name, s.gender) for s in samples] == [("a.jpg", "male")]
    assert samples[0].path.is_file()


def write_shared(shared: Path, build: Path) -> None:
    celeba = build / "celeba_gender"
    write_image(celeba / "male" / "090544.jpg")
    write_image(celeba / "female" / "000001.jpg")
    write_text(
        celeba / "labels.csv",
        "path,gender,person_id,source_split\nmale/090544.jpg,male,2880,Train\nfemale/000001.jpg,female,2937,Validation\n",
    )
    utk = build / "utkface64"
    write_image(utk / "UTKFace" / "26_1_2_20170116184534458.jpg.chip.jpg")
    write_text(
        utk / "labels.csv", "path,gender,age,race\nUTKFace/26_1_2_20170116184534458.jpg.chip.jpg,female,26,Asian\n"
    )
    external = build / "gender_dataset_face"
    write_image(external / "man" / "face_0.jpg")
    write_image(external / "woman" / "face_1.jpg")
    wild = build / "celeba_wild"  # person 2880 is held out: celeba_gender's photo of them must not be trained on
    write_image(wild / "images" / "000149.jpg")
    write_text(
        wild / "labels.csv", "path,gender,person_id,face_x,face_y,face_w,face_h\nimages/000149.jpg,male,2880,1,1,3,4\n"
    )
    pixabay = build / "pixabay_portraits"
    write_image(pixabay / "images" / "male_1022928.jpg")
    write_text(pixabay / "labels.csv", "path,gender,person_id\nimages/male_1022928.jpg,male,pixabay-1022928\n")
    shared.mkdir(parents=True)
    for folder in (celeba, utk, external, wild, pixabay):
        make_tar_gz(shared / f"{folder.name}.tar.gz", folder)
    write_text(shared / "README.md", "# Face data\n")


@pytest.mark.parametrize("spec", ["shared:{shared}", "shared"])
def test_load_spec_shared_skips_external_test_archive(tmp_path: Path, spec: str) -> None:
    shared = tmp_path / "shared"
    write_shared(shared, tmp_path / "build")
    cache = tmp_path / "cache"

    samples = load_spec(spec.format(shared=shared), cache, shared if spec == "shared" else tmp_path / "elsewhere")

    assert sorted((s.source, s.path.name, s.gender, s.person_id, s.age) for s in samples) == [
        ("celeba_gender", "000001.jpg", "female", "2937", None),
        ("celeba_gender", "090544.jpg", "male", "2880", None),
        ("utkface64", "26_1_2_20170116184534458.jpg.chip.jpg", "female", None, 26),
    ]
    assert all(s.path.is_file() and s.path.is_relative_to(cache / "datasets") for s in samples)
    for held in ("gender_dataset_face", "celeba_wild", "pixabay_portraits"):
        assert not (cache / "datasets" / held).exists()


def test_training_samples_hold_out_the_people_of_the_external_sets(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="training.train needs the train extra")
    from training.train import TrainConfig, load_samples

    shared = tmp_path / "shared"
    write_shared(shared, tmp_path / "build")
    samples = load_samples(TrainConfig(cache_dir=str(tmp_path / "cache"), shared_dir=str(shared)))
    assert sorted(s.path.name for s in samples) == ["000001.jpg", "26_1_2_20170116184534458.jpg.chip.jpg"]


def test_hold_out_drops_the_people_and_photos_of_the_held_set() -> None:
    train = [
        Sample(Path("a/1.jpg"), "male", "a", person_id="7"),
        Sample(Path("a/2.jpg"), "male", "a", person_id="8"),
        Sample(Path("b/30_0_1_2017.jpg.chip.jpg"), "male", "b"),
        Sample(Path("b/31_0_1_2017.jpg.chip.jpg"), "male", "b"),
    ]
    held = [
        Sample(Path("c/x.jpg"), "male", "c", person_id="7"),
        Sample(Path("c/p.jpg"), "male", "c", stem="30_0_1_2017"),
    ]
    assert [s.path.name for s in hold_out(train, held)] == ["2.jpg", "31_0_1_2017.jpg.chip.jpg"]


def test_one_person_in_two_sources_and_one_photo_in_two_copies_fall_in_one_split(tmp_path: Path) -> None:
    """CelebA identities are shared by the CelebA archives; UTKFace's two copies of a photo share its stem."""
    gender = [Sample(Path(f"g/{i}.jpg"), "male", "celeba_gender", person_id=str(i)) for i in range(300)]
    aligned = [Sample(Path(f"a/{i}.jpg"), "male", "celeba_align", person_id=str(i)) for i in range(300)]
    chips = [Sample(Path(f"u/{i}_0_0_2017{i}.jpg.chip.jpg"), "male", "utkface64") for i in range(300)]
    context = [Sample(Path(f"c/img{i}.jpg"), "male", "utkface_context", stem=f"{i}_0_0_2017{i}") for i in range(300)]
    split = {(s.source, i % 300): s.split for i, s in enumerate(assign_splits(gender + aligned + chips + context))}
    for i in range(300):
        assert split[("celeba_gender", i)] == split[("celeba_align", i)]
        assert split[("utkface64", i)] == split[("utkface_context", i)]
    assert len(set(split.values())) == 3


def test_csv_stem_column_and_majority_label_filter(tmp_path: Path) -> None:
    """A row that disagrees with its person's majority label is a label error and is left out."""
    for name in ("images/1.jpg", "images/2.jpg", "images/3.jpg"):
        write_image(tmp_path / name)
    labels = write_text(
        tmp_path / "labels.csv",
        "path,gender,person_id,stem,person_majority_gender_fullceleba\n"
        "images/1.jpg,female,5,s1,female\nimages/2.jpg,male,5,s2,female\nimages/3.jpg,male,6,,\n",
    )
    samples = load_labels_csv(labels)
    assert [(s.path.name, s.gender, s.stem) for s in samples] == [("1.jpg", "female", "s1"), ("3.jpg", "male", None)]
    assert samples[0].group == "person:5" and Sample(Path("x/9_1.jpg.chip.jpg"), "male", "x").group == "photo:9_1"


def test_load_spec_shared_without_archives_raises(tmp_path: Path) -> None:
    write_text(tmp_path / "shared" / "README.md", "")
    with pytest.raises(DatasetError, match="no training archives"):
        load_spec(f"shared:{tmp_path / 'shared'}", tmp_path / "cache", tmp_path)


# the detection cache of training/prepare.py


def test_the_detection_cache_keeps_the_eyes_and_aligned_training_crops_use_them(tmp_path: Path) -> None:
    from service.preprocess import CropSpec, crop_face
    from tests.conftest import FIXTURES, read_fixture
    from training.prepare import build_crops, detect_samples, load_detections

    sample = Sample(FIXTURES / "astronaut.jpg", "female", "fixtures")
    record = detect_samples([sample], tmp_path, "blazeface", workers=1)[str(sample.path)]
    assert record.status == "ok" and record.eyes is not None
    cached = load_detections(tmp_path, "blazeface")[str(sample.path)]
    assert cached.box == record.box and np.allclose(cached.eyes, record.eyes, atol=0.06)
    spec = CropSpec(size=32, align=True)
    _, crops = build_crops([sample], {str(sample.path): cached}, spec, tmp_path)
    image = read_fixture("astronaut.jpg")
    assert np.array_equal(crops[0], crop_face(image, cached.box, spec, cached.eyes))
    assert not np.array_equal(crops[0], crop_face(image, cached.box, spec))  # the eyes did turn the crop
