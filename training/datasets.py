"""Loaders that turn each on-disk face-dataset format into one list of labelled samples."""

from __future__ import annotations

import csv
import hashlib
import math
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

LABELS = ("female", "male")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")
FOLDER_NAMES = {
    "female": "female", "females": "female", "woman": "female", "women": "female", "f": "female",
    "male": "male", "males": "male", "man": "male", "men": "male", "m": "male",
}  # fmt: skip
GENDER_VALUES = {**FOLDER_NAMES, "1": "female", "0": "male"}
# The columns load_labels_csv reads.
CSV_REQUIRED = ("path", "gender")
CSV_OPTIONAL = ("person_id", "age", "race", "split", "stem", "face_x", "face_y", "face_w", "face_h", "majority_gender")
# A CSV column of the person's majority label over a larger set (the shared CelebA archives carry one):
# rows that disagree with it are label errors and are left out.
MAJORITY_PREFIXES = ("majority_gender", "person_majority_gender")


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``region`` is an optional (x0, y0, x1, y1) hint where the face is."""

    path: Path
    gender: str
    source: str
    person_id: str | None = None
    age: int | None = None
    race: str | None = None
    split: str | None = None
    region: tuple[int, int, int, int] | None = None
    stem: str | None = None  # the photo's name without suffixes, where a source renamed its copies

    @property
    def label(self) -> int:
        return LABELS.index(self.gender)

    @property
    def group(self) -> str:
        """What must stay on one side of a split: the person where known, else the photo.

        Person ids are one namespace across sources (the CelebA-derived archives share CelebA's identities),
        and a photo is named by its stem, so two sources' copies of one UTKFace photo fall together.
        """
        if self.person_id:
            return f"person:{self.person_id}"
        return f"photo:{self.stem or self.path.name.split('.', 1)[0]}"


class DatasetError(ValueError):
    """A dataset on disk does not have the layout its format promises."""


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _parse_gender(value: str, where: str) -> str:
    gender = GENDER_VALUES.get(value.strip().lower())
    if gender is None:
        raise DatasetError(f"{where}: unknown gender value {value!r}")
    return gender


def load_folder(root: Path, source: str | None = None) -> list[Sample]:
    """Class folders: ``root/male/*.jpg`` and ``root/female/*.jpg`` (also man/woman, men/women)."""
    samples = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        gender = FOLDER_NAMES.get(child.name.lower())
        if gender is not None:
            samples += [Sample(path, gender, source or root.name) for path in _images_under(child)]
    if not samples:
        raise DatasetError(f"{root}: no male/female (or man/woman) folders with images")
    return samples


def load_labels_csv(csv_path: Path, source: str | None = None) -> list[Sample]:
    """A CSV with columns path, gender and optionally person_id, age, race, split and the face's box
    face_x, face_y, face_w, face_h (paths relative to it)."""
    samples = []
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = set(CSV_REQUIRED) - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        majority = next((c for c in reader.fieldnames or () if c.startswith(MAJORITY_PREFIXES)), None)
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if (
                majority
                and row.get(majority)
                and _parse_gender(row[majority], where) != _parse_gender(row["gender"], where)
            ):
                continue
            age = row.get("age") or None
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                raise DatasetError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            try:
                parsed_age = int(float(age)) if age is not None else None
            except ValueError:
                raise DatasetError(f"{where}: age must be a number, got {age!r}") from None
            region = None
            if row.get("face_w"):
                try:
                    x, y, w, h = (int(float(row[k])) for k in ("face_x", "face_y", "face_w", "face_h"))
                except (KeyError, TypeError, ValueError):
                    raise DatasetError(f"{where}: face_x, face_y, face_w and face_h must be numbers") from None
                region = (x, y, x + w, y + h)
            samples.append(
                Sample(
                    path=csv_path.parent / row["path"],
                    gender=_parse_gender(row["gender"], where),
                    source=source or csv_path.parent.name,
                    person_id=row.get("person_id") or None,
                    age=parsed_age,
                    race=row.get("race") or None,
                    split=split,
                    region=region,
                    stem=row.get("stem") or None,
                )
            )
    return samples


UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+")


def load_utkface(root: Path) -> list[Sample]:
    """UTKFace's own naming ``age_gender_race_datetime.jpg[.chip.jpg]``; gender 0 is male, 1 female.

    Files whose names lack a field (a few exist in the original release) are skipped.
    """
    samples = []
    for path in _images_under(root):
        match = UTKFACE_NAME.match(path.name)
        if match is None:
            continue
        age, gender, race = match.groups()
        samples.append(
            Sample(path, "female" if gender == "1" else "male", "utkface", age=int(age), race=UTKFACE_RACES[int(race)])
        )
    if not samples:
        raise DatasetError(f"{root}: no files named like UTKFace's age_gender_race_datetime.jpg")
    return samples


CELEBA_PARTITIONS = {"0": "train", "1": "val", "2": "test"}


def load_celeba(root: Path) -> list[Sample]:
    """CelebA's native files: list_attr_celeba.csv (Male is 1/-1), list_eval_partition.csv,
    img_align_celeba/ and, when present, identity_CelebA.txt for person ids."""
    attr_path = root / "list_attr_celeba.csv"
    if not attr_path.is_file():
        raise DatasetError(f"{root}: list_attr_celeba.csv not found")
    images = root / "img_align_celeba"
    if (images / "img_align_celeba").is_dir():  # the Kaggle copy nests the folder once more
        images = images / "img_align_celeba"
    partitions: dict[str, str] = {}
    partition_path = root / "list_eval_partition.csv"
    if partition_path.is_file():
        with partition_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["partition"] not in CELEBA_PARTITIONS:
                    raise DatasetError(f"{partition_path}: unknown partition {row['partition']!r}")
                partitions[row["image_id"]] = CELEBA_PARTITIONS[row["partition"]]
    identities: dict[str, str] = {}
    identity_path = root / "identity_CelebA.txt"
    if identity_path.is_file():
        identities = dict(line.split()[:2] for line in identity_path.read_text().splitlines() if line.strip())
    samples = []
    with attr_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            image_id = row["image_id"]
            samples.append(
                Sample(
                    path=images / image_id,
                    gender="male" if row["Male"].strip() == "1" else "female",
                    source="celeba",
                    person_id=identities.get(image_id),
                    split=partitions.get(image_id),
                )
            )
    return samples


def load_imdb_wiki(mat_path: Path, min_face_score: float = 1.0, max_second_face_score: float = 0.0) -> list[Sample]:
    """IMDB-WIKI ``imdb.mat`` / ``wiki.mat`` metadata; images are resolved beside the .mat file.

    Samples without gender (NaN) are dropped, as are images whose face_score is below
    ``min_face_score`` (-inf means no face) or that show a second face scoring above
    ``max_second_face_score``. face_location becomes the sample's region hint.
    """
    from scipy.io import loadmat

    data = loadmat(mat_path)
    key = next((k for k in ("imdb", "wiki") if k in data), None)
    if key is None:
        raise DatasetError(f"{mat_path}: expected an 'imdb' or 'wiki' struct")
    meta = data[key][0, 0]
    genders = meta["gender"][0]
    paths = meta["full_path"][0]
    locations = meta["face_location"][0]
    face_scores = meta["face_score"][0]
    second_scores = meta["second_face_score"][0]
    celeb_ids = meta["celeb_id"][0] if "celeb_id" in meta.dtype.names else None
    samples = []
    for i, gender in enumerate(genders):
        if math.isnan(gender) or not face_scores[i] >= min_face_score:
            continue
        if not math.isnan(second_scores[i]) and second_scores[i] > max_second_face_score:
            continue
        x0, y0, x1, y1 = (round(v) for v in locations[i].ravel()[:4])
        samples.append(
            Sample(
                path=mat_path.parent / str(paths[i][0]),
                gender="male" if gender == 1 else "female",
                source=key,
                person_id=str(int(celeb_ids[i])) if celeb_ids is not None else None,
                region=(x0, y0, x1, y1),
            )
        )
    return samples


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def assign_splits(samples: Iterable[Sample], val: float = 0.1, test: float = 0.1) -> list[Sample]:
    """Give every sample a fixed train/val/test split.

    The split is a hash of the sample's group (its person, else its photo), so it does not depend on a
    seed or on which other samples are loaded, and one person, or one photo in two sources, never
    straddles splits. A split already set by the dataset itself (CelebA's partition file) is kept.
    """
    out = []
    for sample in samples:
        if sample.split is not None:
            out.append(sample)
            continue
        u = _unit_hash(sample.group)
        split = "test" if u < test else "val" if u < test + val else "train"
        out.append(replace(sample, split=split))
    return out


AGE_BANDS = ((13, 19), (20, 29), (30, 44), (45, 59), (60, 200))


def age_band(age: int | None) -> str | None:
    """The report's age band of an age ("20-29", "60+"); None for no age or a child's."""
    if age is None:
        return None
    return next((f"{lo}-{hi}" if hi < 200 else f"{lo}+" for lo, hi in AGE_BANDS if lo <= age <= hi), None)


def keep_adults(samples: Iterable[Sample], min_age: int = 13) -> list[Sample]:
    """Drop children: their gender is not visually defined and cannot be checked by eye."""
    return [s for s in samples if s.age is None or s.age >= min_age]


def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """Unpack ``NAME.tar.gz`` under ``cache_dir/datasets`` once and return its folder.

    An archive with one top folder keeps that folder's name; any other layout is unpacked into
    ``datasets/NAME``. A stamp file (size and mtime of the archive) makes this idempotent.
    """
    target = cache_dir / "datasets"
    target.mkdir(parents=True, exist_ok=True)
    name = archive.name.removesuffix(".tar.gz").removesuffix(".tgz")
    marker = target / f".{name}.extracted"
    stamp = f"{archive.stat().st_size}:{int(archive.stat().st_mtime)}"
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        # One top folder, whether or not the archive holds an entry for the folder itself.
        top = next(iter(tops), "")
        single = len(tops) == 1 and all(m.name.startswith(f"{top}/") or (m.isdir() and m.name == top) for m in members)
        folder = target / next(iter(tops)) if single else target / name
        if not (marker.is_file() and marker.read_text() == stamp and folder.is_dir()):
            tar.extractall(target if single else folder, members=members, filter="data")
            marker.write_text(stamp)
    return folder


def load_extracted(folder: Path) -> list[Sample]:
    """An extracted archive: its labels.csv when present, else class folders."""
    labels = folder / "labels.csv"
    return load_labels_csv(labels, folder.name) if labels.is_file() else load_folder(folder)


def hold_out(samples: Iterable[Sample], held: Iterable[Sample]) -> list[Sample]:
    """Drop every sample whose person or photo (its group) is in ``held``, the external test sets."""
    groups = {s.group for s in held}
    return [s for s in samples if s.group not in groups]


SPEC_FORMATS = ("folder", "csv", "utkface", "celeba", "imdb", "wiki", "archive", "shared")
# The shared archives kept out of training and of every choice made on validation: external end-to-end
# tests. celeba_wild and pixabay_portraits are whole photos with real context; gender_dataset_face holds
# tight crops, padded with black for detection (its framing cannot show how framing affects a model).
CONTEXT_TEST_ARCHIVES = ("celeba_wild", "pixabay_portraits")
TIGHT_TEST_ARCHIVE = "gender_dataset_face"
EXTERNAL_TEST_ARCHIVES = (*CONTEXT_TEST_ARCHIVES, TIGHT_TEST_ARCHIVE)


# Sources drawn from one population of people and photos: a figure on one of them is in-domain for a model
# trained on another. Any other source is its own population.
POPULATIONS = {
    "celeba_gender": "CelebA", "celeba_align_halfres_10k": "CelebA", "celeba_wild": "CelebA",
    "utkface64": "UTKFace", "utkface_context": "UTKFace",
}  # fmt: skip
# Sources whose crops keep real hair, shoulders and background around the face.
CONTEXT_SOURCES = ("celeba_align_halfres_10k", "utkface_context", *CONTEXT_TEST_ARCHIVES)


def population(source: str) -> str:
    """The population a source's people and photos come from (see POPULATIONS)."""
    return POPULATIONS.get(source, source)


def external_test_archives(shared_dir: Path) -> list[Path]:
    """The external test archives present in ``shared_dir``, in EXTERNAL_TEST_ARCHIVES order."""
    return [p for name in EXTERNAL_TEST_ARCHIVES if (p := shared_dir / f"{name}.tar.gz").is_file()]


def load_spec(spec: str, cache_dir: Path, shared_dir: Path) -> list[Sample]:
    """Load one ``--data`` argument: ``FORMAT:PATH`` (see SPEC_FORMATS), or ``shared`` for the shared
    archives except the external test sets."""
    kind, _, value = spec.partition(":")
    if kind not in SPEC_FORMATS:
        raise DatasetError(f"unknown data format {kind!r} in {spec!r}; use one of {', '.join(SPEC_FORMATS)}")
    if kind == "shared":
        folder = Path(value) if value else shared_dir
        held = set(external_test_archives(folder))
        archives = [a for a in sorted(folder.glob("*.tar.gz")) if a not in held]
        if not archives:
            raise DatasetError(f"no training archives (*.tar.gz) in {folder}")
        return [s for a in archives for s in load_extracted(extract_archive(a, cache_dir))]
    path = Path(value).expanduser()
    if not path.exists():
        raise DatasetError(f"{spec}: {path} does not exist")
    if kind == "folder":
        return load_folder(path)
    if kind == "csv":
        return load_labels_csv(path)
    if kind == "utkface":
        return load_utkface(path)
    if kind == "celeba":
        return load_celeba(path)
    if kind in ("imdb", "wiki"):
        return load_imdb_wiki(path)
    return load_extracted(extract_archive(path, cache_dir))
