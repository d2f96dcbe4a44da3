"""Property-based tests (hypothesis): random configs, and random bytes where a recipe, a data file
or a checkpoint file should be, end either in success or in neuralab's own clear error — never
in a crash from deep inside a library."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuralab.checkpoint import format as checkpoint  # noqa: E402
from neuralab.checkpoint.format import CheckpointError, load_checkpoint, load_training_state  # noqa: E402
from neuralab.config import ConfigError, RunConfig, resolve_config  # noqa: E402
from neuralab.data import DataError, load_dataset  # noqa: E402
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


@SETTINGS
@given(pairs=st.lists(st.tuples(key_strategy, value_strategy), max_size=5))
def test_random_overrides_validate_or_raise_config_error(
    pairs: list[tuple[str, str]], fault_table
) -> None:
    try:
        config = resolve_config(None, [f"{key}={value}" for key, value in pairs])
    except ConfigError as error:
        assert str(error)  # a message, naming the field
    else:
        assert isinstance(config, RunConfig)
    fault_table(
        "hypothesis: random `--set` overrides (real, misspelt and made-up keys)",
        1,
        "validated, or ConfigError naming the field; nothing else escaped",
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


@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes_as_an_image_raise_data_error(
    data: bytes, tmp_path_factory: pytest.TempPathFactory, fault_table
) -> None:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    for label in ("a", "b"):
        (root / label).mkdir()
        for index in range(3):
            Image.new("L", (6, 6), 40 * index).save(root / label / f"{index}.png")
    (root / "a" / "random.png").write_bytes(data)
    try:
        load_dataset(f"folder:{root}", data_dir=str(root.parent / "cache"), image_size=6)
    except DataError as error:
        assert "random.png" in str(error)
    fault_table(
        "hypothesis: random bytes as an image in a folder set",
        1,
        "DataError naming the file; nothing else escaped",
    )


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny checkpoint (with training state) to damage."""
    import neuralab

    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("ckpt") / "run"
    neuralab.train(data="digits", model="perceptron", epochs=1, out=str(out), verbose=False)
    return out / "checkpoint"


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
