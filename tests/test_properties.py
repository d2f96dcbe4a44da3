"""Property-based tests (hypothesis): random configs, and random bytes where a recipe, a data file
or a checkpoint file should be, end either in success or in neuralab's own clear error — never
in a crash from deep inside a library."""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip(
    "hypothesis", reason="the property tests need hypothesis: pip install -e '.[test]'"
)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuralab.checkpoint import format as checkpoint  # noqa: E402
from neuralab.checkpoint.format import CheckpointError, load_checkpoint, load_training_state  # noqa: E402
from neuralab.config import ConfigError, RunConfig, resolve_config  # noqa: E402
from neuralab.data import DataError, load_dataset  # noqa: E402
from neuralab.data.images import GRAYSCALE_MODES  # noqa: E402
from neuralab.inference.predict import Predictor  # noqa: E402

EXAMPLES = 60  # per property: enough to find the easy crashes, quick enough for every run
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def config_keys() -> list[str]:
    """Every dotted field of RunConfig, e.g. 'train.epochs'."""
    keys = []
    for section, field in RunConfig.model_fields.items():
        annotation = field.annotation
        if hasattr(annotation, "model_fields"):
            keys += [f"{section}.{name}" for name in annotation.model_fields]
        else:
            keys.append(section)
    return keys


KEYS = config_keys()
# A real key, a real key with a typo, or a made-up dotted path.
key_strategy = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda key: key[:-1] + "x"),
    st.lists(
        st.text(string.ascii_lowercase + "_", min_size=1, max_size=8), min_size=1, max_size=4
    ).map(".".join),
)
value_strategy = st.one_of(
    st.integers(-(10**9), 10**9).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "off", "null", "[]", "{}", "[1, 2]", "{a: 1}", "auto", "''"]),
    st.text(max_size=20).filter(lambda text: "\n" not in text),
)


def names_a_key(message: str, keys: list[str]) -> bool:
    """Whether `message` names one of the dotted `keys`, whole, or its unknown part or a dotted
    prefix of it in quotes (an unknown section is refused by its own name: 'trian' of
    'trian.epochs'; an unknown field by its path: 'data._' of 'data._._')."""
    parts = {part for key in keys for part in key.split(".")}
    prefixes = {
        ".".join(key.split(".")[:end]) for key in keys for end in range(1, key.count(".") + 2)
    }
    named = parts | prefixes
    return any(key in message for key in keys) or any(f"'{part}'" in message for part in named)


@SETTINGS
@given(pairs=st.lists(st.tuples(key_strategy, value_strategy), max_size=5))
def test_random_overrides_validate_or_raise_config_error(
    pairs: list[tuple[str, str]], fault_table
) -> None:
    try:
        config = resolve_config(None, [f"{key}={value}" for key, value in pairs])
    except ConfigError as error:
        assert names_a_key(str(error), [key for key, _ in pairs]), error
    else:
        assert isinstance(config, RunConfig)
    fault_table(
        "hypothesis: random `--set` overrides (real, misspelt and made-up keys)",
        1,
        "validated, or ConfigError naming the key (or its unknown part); nothing else escaped",
    )


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_as_a_recipe_file_raise_config_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory, fault_table
) -> None:
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_bytes(data)
    try:
        resolve_config(str(path))
    except ConfigError as error:
        assert "recipe.yaml" in str(error)
    fault_table(
        "hypothesis: random bytes as a recipe file",
        1,
        "read, or ConfigError naming the file; nothing else escaped",
    )


@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_csv_text_set_raise_data_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory, fault_table
) -> None:
    path = tmp_path_factory.mktemp("csv") / "reviews.csv"
    path.write_bytes(b"text,label\n" + data)
    try:
        load_dataset(f"csv:{path}", val_split=0.0)
    except DataError as error:
        assert "reviews.csv" in str(error)
    fault_table(
        "hypothesis: random bytes in a CSV text set",
        1,
        "loaded, or DataError naming the file; nothing else escaped",
    )


IMAGE_SIZE = 6  # pixels: the folder below is loaded at 6x6, so 6x6 images are not resized
IMAGE_FORMATS = ["PNG", "BMP", "JPEG", "WEBP", "GIF", "TIFF"]  # Pillow's format names
LOSSLESS = {"PNG", "BMP", "TIFF"}  # (GIF is lossless too, but palettises RGB)


@st.composite
def encoded_images(draw) -> tuple[bytes, torch.Tensor | None]:
    """A real image file (random pixels, mode, size and format), and the uint8 (C, 6, 6)
    tensor the folder must load from it when that is known exactly (lossless, 6x6), else None."""
    from PIL import Image

    mode = draw(st.sampled_from(["L", "RGB", "RGBA"]))
    width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = len(mode)
    raw = draw(st.binary(min_size=width * height * channels, max_size=width * height * channels))
    picture = Image.frombytes(mode, (width, height), raw)
    image_format = draw(st.sampled_from(IMAGE_FORMATS))
    if image_format == "JPEG" and mode == "RGBA":
        picture = picture.convert("RGB")  # JPEG has no alpha channel
    buffer = io.BytesIO()
    picture.save(buffer, image_format)
    exact = (width, height) == (IMAGE_SIZE, IMAGE_SIZE) and picture.mode in ("L", "RGB")
    if not (exact and image_format in LOSSLESS):
        return buffer.getvalue(), None
    pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
    return buffer.getvalue(), pixels.view(IMAGE_SIZE, IMAGE_SIZE, -1).permute(2, 0, 1)


@st.composite
def damaged(draw, files: st.SearchStrategy) -> tuple[bytes, None]:
    """A real image file cut short, or with one byte changed."""
    data, _ = draw(files)
    if draw(st.booleans()):
        return data[: draw(st.integers(0, len(data) - 1))], None
    position = draw(st.integers(0, len(data) - 1))
    changed = (data[position] + draw(st.integers(1, 255))) % 256
    return data[:position] + bytes([changed]) + data[position + 1 :], None


image_file_strategy = st.one_of(
    st.binary(max_size=400).map(lambda data: (data, None)),
    encoded_images(),
    damaged(encoded_images()),
)


def pillow_reads(data: bytes) -> str | None:
    """The mode Pillow itself reads these bytes as, when they are an image it can use
    (format recognised, integrity check passed, every pixel decoded, convertible to RGB,
    within Pillow's pixel limit); None otherwise. The oracle for the folder loader."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                return None
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            ImageOps.exif_transpose(image).convert("RGB")
            return image.mode
    except Exception:  # whatever Pillow raises, the bytes are not a usable image
        return None


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # damaged TIFF tags
@SETTINGS
@given(file=image_file_strategy)
def test_image_bytes_load_as_pixels_or_raise_data_error_naming_the_file(
    file: tuple[bytes, torch.Tensor | None], tmp_path_factory: pytest.TempPathFactory, fault_table
) -> None:
    """Bytes in a folder of images: what Pillow can read loads as a valid image (its exact
    pixels when lossless); what it cannot read is refused with a DataError naming the file.
    Neither is ever passed over silently, e.g. as a blank image."""
    from PIL import Image

    data, exact = file
    root = tmp_path_factory.mktemp("images")
    for label in ("a", "b"):
        (root / label).mkdir()
        for index in range(3):  # 6x6 grey squares: 0, 40, 80
            Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 40 * index).save(root / label / f"{index}.png")
    path = root / "a" / "random.png"
    path.write_bytes(data)
    mode = pillow_reads(data)
    try:
        dataset = load_dataset(
            f"folder:{root}", data_dir=str(root.parent / "cache"), image_size=IMAGE_SIZE,
            test_split=0.0,
        )  # fmt: skip
    except DataError as error:
        assert mode is None, f"Pillow reads these bytes as {mode}, yet the folder refused: {error}"
        assert str(path) in str(error)
        fault_table(
            "hypothesis: bytes Pillow cannot read (random, or an image cut or changed) as an "
            "image in a folder set",
            1,
            "DataError naming the file",
        )
        return
    assert mode is not None, "bytes Pillow cannot read were loaded as an image"
    images = dataset.train.images  # (7, C, 6, 6): the six squares and the file
    channels = 1 if mode in GRAYSCALE_MODES else 3
    assert images.dtype == torch.uint8 and images.shape == (7, channels, IMAGE_SIZE, IMAGE_SIZE)
    squares = [torch.full((channels, IMAGE_SIZE, IMAGE_SIZE), 40 * i) for i in range(3)]
    rows = list(images)
    for square in squares:  # each square twice (classes a and b), untouched by the file
        assert sum(torch.equal(row, square) for row in rows) >= 2
    if exact is not None:
        assert any(torch.equal(row, exact.expand(channels, -1, -1)) for row in rows)
    fault_table(
        "hypothesis: bytes Pillow reads (a real image, or one cut or changed) as an image in "
        "a folder set",
        1,
        "loaded as a uint8 (C, 6, 6) image beside the others (its exact pixels when lossless)",
    )


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny checkpoint (with training state) to damage."""
    import neuralab

    pytest.importorskip(
        "sklearn", reason="the digits dataset needs scikit-learn: pip install -e '.[test]'"
    )
    import shutil

    from neuralab.train.callbacks import Callback

    out = tmp_path_factory.mktemp("ckpt") / "run"
    kept = out.with_name("unfinished")

    class KeepUnfinished(Callback):  # a finished run drops its resume state: copy it before
        def on_fit_end(self, trainer) -> None:
            shutil.copytree(out / "checkpoint", kept)

    neuralab.train(data="digits", model="perceptron", epochs=1, out=str(out), verbose=False,
                   callbacks=[KeepUnfinished()])  # fmt: skip
    assert (kept / "training.safetensors").is_file()
    return kept


CHECKPOINT_FILES = [
    "model.safetensors",
    "meta.json",
    "training.json",
    "training.safetensors",
    "manifest.json",
]


def load_everything(folder: Path) -> None:
    load_checkpoint(folder)
    load_training_state(folder)
    Predictor.load(folder)


@SETTINGS
@given(name=st.sampled_from(CHECKPOINT_FILES), data=st.binary(max_size=600), reseal=st.booleans())
def test_random_bytes_in_a_checkpoint_raise_checkpoint_error(
    saved_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    data: bytes,
    reseal: bool,
    fault_table,
) -> None:
    """One file replaced by random bytes, with the manifest left alone (a damaged file) or
    re-sealed to vouch for it (a hostile one): the loaders refuse it with CheckpointError."""
    import shutil

    folder = tmp_path_factory.mktemp("damaged") / "checkpoint"
    shutil.copytree(saved_checkpoint, folder)
    (folder / name).write_bytes(data)
    if reseal and name != "manifest.json":
        (folder / "manifest.json").unlink()
        checkpoint.write_manifest(folder)
    with pytest.raises(CheckpointError):
        load_everything(folder)
    fault_table(
        "hypothesis: random bytes as a checkpoint file (manifest kept or re-sealed)",
        1,
        "CheckpointError; nothing loaded, nothing else escaped",
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    field=st.sampled_from(["model", "spec", "classes", "preprocessing", "kind", "format"]),
    value=json_values,
)
def test_random_metadata_fields_raise_checkpoint_error_or_load(
    saved_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    field: str,
    value,
    fault_table,
) -> None:
    """A re-sealed meta.json whose field holds random JSON: either it still describes a
    loadable model, or loading says what is wrong — nothing else escapes."""
    import shutil

    folder = tmp_path_factory.mktemp("meta") / "checkpoint"
    shutil.copytree(saved_checkpoint, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta[field] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "manifest.json").unlink()
    checkpoint.write_manifest(folder)
    try:
        Predictor.load(folder)
    except CheckpointError as error:
        assert str(folder) in str(error)
    fault_table(
        "hypothesis: random JSON in a meta.json field (re-sealed)",
        1,
        "loaded, or CheckpointError naming the folder; nothing else escaped",
    )
