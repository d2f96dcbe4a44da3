"""`neuralab export`: every registered model × ONNX / TorchScript round trips (reloaded and run
on batch sizes and text lengths other than the export's), refusal of mismatching exports and of
non-finite weights (the destination untouched), the export-friendly reformulations of the text
models against their original code, and the CLI on a tiny digits run."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import neuralab
from neuralab.checkpoint.format import save_checkpoint
from neuralab.cli.main import main
from neuralab.config import RunConfig
from neuralab.data.augment import to_float
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings
from neuralab.inference.exporters import FORMATS, ExportError
from neuralab.models import MODELS, InputSpec, TextSpec, build_model, model_input
from neuralab.models.ngram import NGRAM_HASH_MULTIPLIER
from neuralab.models.sequence import PAD_ID, lengths_of

IMAGE = InputSpec(channels=3, height=32, width=32, num_classes=5)
MAX_LENGTH = 24
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
# Small sizes so each export takes well under a second; others are built with their defaults.
MODEL_KWARGS: dict[str, dict] = {
    "mlp": {"depth": 2, "width": 16, "batch_norm": True, "dropout": 0.1},
    "cnn": {"width": 4},
    "mnist_fast": {"width": 4},
    "alexnet": {"fc_width": 16},
    "resnet18": {"width": 4},
    "airbench": {"widths": [8, 8, 8]},
    "textcnn": {"embed_dim": 8, "filters": [2, 3, 4], "pooling": "max+mean"},
    "rnn": {"embed_dim": 8, "hidden": 6},
    "lstm": {"embed_dim": 8, "hidden": 6, "layers": 2, "pooling": "last"},
    "gru": {"embed_dim": 8, "hidden": 6, "pooling": "mean"},
    "transformer": {"embed_dim": 8, "heads": 2, "ff_dim": 16},
    "ngram": {"embed_dim": 8, "ngrams": 3, "buckets": 101, "binary": True, "nb": True},
}
WORDS = [f"w{i}" for i in range(40)]
# The tests load TorchScript files the way a user would; torch says jit is deprecated each time.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 30))) for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train(sentences(50), TokenizerSettings(min_frequency=1, max_length=24))


def built(name: str, spec: InputSpec | TextSpec) -> torch.nn.Module:
    """The model with seeded weights, NB ratios set (zero for padding, as training leaves them)."""
    torch.manual_seed(0)
    model = build_model(name, spec, **MODEL_KWARGS.get(name, {})).eval()
    if getattr(model, "nb_weight", None) is not None:
        with torch.no_grad():
            model.nb_ratio.normal_()
            model.nb_ratio[PAD_ID] = 0.0
            model.nb_weight.weight.normal_()
    return model


def save_run(folder: Path, name: str, tokenizer: TextTokenizer, **meta_extra) -> Path:
    """A checkpoint as training writes it, without the training."""
    model = meta_extra.pop("model_object", None)
    if model_input(name) == "text":
        spec = TextSpec(tokenizer.vocab_size, 3, MAX_LENGTH)
        meta = {"kind": "text", "tokenizer": tokenizer.describe(), "tta": False}
        files = {"tokenizer.json": tokenizer.to_json()}
    else:
        spec, files = IMAGE, None
        meta = {"tta": False, "preprocessing": {"mean": MEAN, "std": STD, "channels": 3,
                                                 "image_size": [32, 32]}}  # fmt: skip
    meta |= {
        "model": {"name": name, "args": MODEL_KWARGS.get(name, {})},
        "spec": spec.to_dict(),
        "classes": [f"c{i}" for i in range(spec.num_classes)],
        "config": RunConfig().model_dump(mode="json"),
        "epoch": 1,
        "step": 1,
        **meta_extra,
    }
    save_checkpoint(folder / "checkpoint", model or built(name, spec), meta, files=files)
    return folder


def token_batch(rows: int, width: int, longest: int, vocab: int, seed: int) -> torch.Tensor:
    """Padded ids (rows, width): row 0 has `longest` tokens, the last none, the rest between."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, width), generator=generator)
    lengths = torch.randint(1, longest + 1, (rows,), generator=generator)
    lengths[0], lengths[-1] = longest, 0 if rows > 1 else longest
    ids[torch.arange(width) >= lengths[:, None]] = PAD_ID
    return ids


def loader(format: str):
    """Path → a callable mapping one input batch to logits, like a user would load it."""
    if format == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime")

        def run_onnx(path: Path):
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            return lambda batch: torch.from_numpy(session.run(None, {name: batch.numpy()})[0])

        return run_onnx
    return lambda path: torch.jit.load(str(path))


# ------------------------------------------------------------------ every model, both formats


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", MODELS.names())
def test_export_round_trip_matches_pytorch_on_other_shapes(
    tmp_path: Path, tokenizer: TextTokenizer, name: str, format: str
) -> None:
    run_dir = save_run(tmp_path / "run", name, tokenizer)
    result = neuralab.export(run_dir, format, check_examples=40, check_data="random")
    assert result.path.is_file() and result.examples == 40 and result.top1_agreement == 1.0
    assert result.max_abs_diff <= result.tolerance
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert sidecar["model"]["name"] == name and sidecar["parity"]["examples"] == 40
    predictor = neuralab.load(run_dir)
    run = loader(format)(result.path)
    if predictor.modality.kind == "text":
        assert (result.path.parent / sidecar["input"]["tokenizer_file"]).is_file()
        vocab = tokenizer.vocab_size
        # Lengths the export never saw: one token, a 24-token row, padding past max_length.
        shapes = [(1, 1, 1), (4, 9, 9), (6, 24, 24), (2, 30, 20)]
        batches = [token_batch(b, t, n, vocab, seed) for seed, (b, t, n) in enumerate(shapes)]
        expected = [predictor.model(batch) for batch in batches]
    else:
        batches = [torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8) for b in (1, 5)]
        expected = [predictor.model(to_float(batch, MEAN, STD)) for batch in batches]
    with torch.inference_mode():
        for batch, logits in zip(batches, expected, strict=True):
            torch.testing.assert_close(run(batch), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("fmt", "tta"), [("torchscript", True), ("onnx", "flip+shift")])
def test_image_export_holds_the_runs_test_time_augmentation(
    tmp_path: Path, tokenizer: TextTokenizer, fmt: str, tta: bool | str
) -> None:
    run_dir = save_run(tmp_path / "run", "lenet", tokenizer, tta=tta)
    result = neuralab.export(run_dir, fmt, check_examples=8, check_data="random")
    model, images = neuralab.load(run_dir).model, torch.randint(0, 256, (3, 3, 32, 32))
    x = to_float(images.to(torch.uint8), MEAN, STD)
    with torch.inference_mode():
        expected = 0.5 * (model(x) + model(x.flip(-1)))
        if tta == "flip+shift":
            padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
            views = (padded[..., :32, :32], padded[..., 2:, 2:])
            shifted = [0.5 * (model(v) + model(v.flip(-1))) for v in views]
            expected = 0.5 * expected + 0.25 * (shifted[0] + shifted[1])
    if fmt == "torchscript":
        exported = torch.jit.load(str(result.path))(images.to(torch.uint8))
    else:
        onnxruntime = pytest.importorskip("onnxruntime")
        session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {"images": images.to(torch.uint8).numpy()})
        exported = torch.from_numpy(outputs[0])
    torch.testing.assert_close(exported, expected, rtol=1e-4, atol=1e-5)
    assert json.loads(result.sidecar.read_text())["preprocessing"]["tta"] == (
        "flip" if tta is True else tta
    )


def test_safetensors_export_rebuilds_from_the_file_alone(
    tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    run_dir = save_run(tmp_path / "run", "gru", tokenizer)
    result = neuralab.export(run_dir, "safetensors", check_examples=20, check_data="random")
    assert result.max_abs_diff < 1e-6 and result.path.suffix == ".safetensors"
    assert json.loads(result.sidecar.read_text())["input"]["dtype"] == "int64"


def test_text_export_checks_on_the_runs_own_test_split(
    tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    rows = [(text, "neg" if i % 2 else "pos") for i, text in enumerate(sentences(40, seed=1))]
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    config = RunConfig.model_validate({"data": {"name": f"csv:{csv}"}}).model_dump(mode="json")
    run_dir = save_run(tmp_path / "run", "lstm", tokenizer, config=config, classes=["neg", "pos"])
    result = neuralab.export(run_dir, "onnx", check_examples=1000)
    assert result.check_data == "test" and result.examples == 8  # the 20% seeded test split


# ----------------------------------------------------------------------- refusals and failures


def test_mismatching_export_is_not_written_and_the_destination_is_untouched(
    tmp_path: Path, tokenizer: TextTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = save_run(tmp_path / "run", "mlp", tokenizer)
    destination = tmp_path / "out" / "model.torchscript.pt"
    destination.parent.mkdir()
    destination.write_bytes(b"the previous export")
    write, run = FORMATS["torchscript"]

    def perturbed(path, batches):
        return [logits + 0.01 for logits in run(path, batches)]

    monkeypatch.setitem(FORMATS, "torchscript", (write, perturbed))
    with pytest.raises(ExportError, match=r"model 'mlp' does not match .* 0\.01 .*tolerance"):
        neuralab.export(run_dir, "torchscript", destination, 16, check_data="random")
    assert destination.read_bytes() == b"the previous export"
    assert sorted(p.name for p in destination.parent.iterdir()) == ["model.torchscript.pt"]


def test_a_model_that_cannot_be_exported_leaves_nothing_behind(
    tmp_path: Path, tokenizer: TextTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = save_run(tmp_path / "run", "cnn", tokenizer)

    def unexportable(module, example, path, contract):
        raise RuntimeError("Exporting the operator 'aten::magic' is not supported")

    monkeypatch.setitem(FORMATS, "onnx", (unexportable, FORMATS["onnx"][1]))
    with pytest.raises(ExportError, match="cannot export model 'cnn' to onnx: .*aten::magic"):
        neuralab.export(run_dir, "onnx", check_examples=4, check_data="random")
    assert not (run_dir / "export").exists() or not list((run_dir / "export").iterdir())


def test_non_finite_weights_are_refused_naming_the_tensor(
    tmp_path: Path, tokenizer: TextTokenizer, fault_table
) -> None:
    model = built("mlp", IMAGE)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    run_dir = save_run(tmp_path / "run", "mlp", tokenizer, model_object=model)
    with pytest.raises(ExportError, match=r"tensor '1\.weight' holds 1 non-finite"):
        neuralab.export(run_dir, "torchscript", check_data="random")
    assert not (run_dir / "export").exists()
    fault_table(
        "export of a checkpoint with a NaN weight", 1, "refused, naming the tensor; nothing written"
    )


def test_missing_onnx_tools_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ImportError, match=r"pip install 'neuralab\[export\]'"):
        neuralab.export("any-run", "onnx")


def test_missing_test_data_is_an_error_that_names_the_fix(
    tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    config = RunConfig.model_validate({"data": {"name": f"csv:{tmp_path / 'gone.csv'}"}})
    run_dir = save_run(tmp_path / "run", "ngram", tokenizer, config=config.model_dump())
    with pytest.raises(ValueError, match="--check-data random"):
        neuralab.export(run_dir, "torchscript")


# ------------------------------------------------- export-friendly forms equal the original code


def original_textcnn(model, ids: torch.Tensor) -> torch.Tensor:
    """TextCNN.forward before the export rewrite: it padded only batches shorter than a window."""
    lengths = lengths_of(ids)
    short = max(model.widths) - ids.shape[1]
    if short > 0:
        ids = F.pad(ids, (0, short), value=PAD_ID)
    x = model.embedding(ids).transpose(1, 2)
    pooled = []
    for width, conv in zip(model.widths, model.convs, strict=True):
        features = conv(x)
        valid = torch.arange(features.shape[2]) < (lengths - width + 1).clamp_min(1)[:, None]
        pooled.append(features.masked_fill(~valid[:, None], float("-inf")).amax(2))
        if model.mean_pooling:
            rectified = torch.relu(features) * valid[:, None]
            pooled.append(rectified.sum(2) / valid.sum(1, keepdim=True).clamp_min(1))
    return model.classifier(torch.relu(torch.cat(pooled, dim=1)))


def original_ngram(model, ids: torch.Tensor) -> torch.Tensor:
    """NgramBag.forward before the rewrite: n-grams from `unfold`, repeats cleared in place."""
    grams = [ids]
    for n in range(2, model.ngrams + 1):
        if ids.shape[1] < n:
            break
        windows = ids.unfold(1, n, 1)
        hashed = windows[..., 0]
        for k in range(1, n):
            hashed = (hashed * NGRAM_HASH_MULTIPLIER + windows[..., k]).remainder(model.buckets)
        grams.append(torch.where((windows != PAD_ID).all(2), model.vocab_size + hashed, PAD_ID))
    features = torch.cat(grams, dim=1)
    if model.binary:
        features = features.sort(dim=1).values
        repeat = torch.zeros_like(features, dtype=torch.bool)
        repeat[:, 1:] = features[:, 1:] == features[:, :-1]
        features = features.masked_fill(repeat, PAD_ID)
    logits = model.classifier(model.bag(features))
    weighted = model.nb_weight(features) * model.nb_ratio[features]
    return logits + model.nb_scale * weighted.sum(1)


def original_transformer(model, ids: torch.Tensor) -> torch.Tensor:
    """TransformerClassifier.forward before the rewrite (in-place mask fix-up)."""
    ids = ids[:, : model.max_length]
    real = ids != PAD_ID
    real[:, 0] |= ~real.any(1)
    x = model.embedding(ids) + model.position(torch.arange(ids.shape[1]))
    x = model.norm(model.encoder(x, src_key_padding_mask=~real))
    real = real.unsqueeze(2).float()
    return model.classifier((x * real).sum(1) / real.sum(1).clamp_min(1.0))


@pytest.mark.parametrize(
    ("name", "original"),
    [("textcnn", original_textcnn), ("ngram", original_ngram),
     ("transformer", original_transformer)],
)  # fmt: skip
def test_export_friendly_forms_equal_the_original_code(name: str, original) -> None:
    spec = TextSpec(vocab_size=50, num_classes=3, max_length=MAX_LENGTH)
    model = built(name, spec)
    for ids in (token_batch(5, 12, 12, 50, 0), token_batch(3, 2, 2, 50, 1),
                token_batch(1, 1, 1, 50, 2), torch.zeros(2, 3, dtype=torch.long)):  # fmt: skip
        with torch.inference_mode():
            torch.testing.assert_close(model(ids), original(model, ids), rtol=1e-6, atol=1e-6)


def test_traced_ngram_mean_equals_the_embedding_bag(monkeypatch: pytest.MonkeyPatch) -> None:
    model = built("ngram", TextSpec(vocab_size=50, num_classes=3, max_length=MAX_LENGTH))
    ids = token_batch(6, 15, 15, 50, 3)
    with torch.inference_mode():
        bag = model(ids)
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        torch.testing.assert_close(model(ids), bag, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")
    out = tmp_path_factory.mktemp("runs") / "digits-mlp"
    neuralab.train(data="digits", model="mlp", epochs=1, out=str(out), verbose=False,
                   overrides=["train.precision=fp32", "model.args.width=32"])  # fmt: skip
    return out


def test_cli_exports_a_digits_run_checked_on_its_test_split(
    digits_run: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["export", str(digits_run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    path = digits_run / "export" / "mlp.onnx"
    assert f"wrote {path}" in out and "top-1 agreement 100.00%" in out
    sidecar = json.loads(path.with_name("mlp.onnx.json").read_text(encoding="utf-8"))
    assert sidecar["parity"]["data"] == "test" and sidecar["parity"]["examples"] == 359
    assert sidecar["input"] == {"name": "images", "dtype": "uint8", "shape": ["batch", 1, 8, 8],
                                "note": sidecar["input"]["note"]}  # fmt: skip
    custom = digits_run / "elsewhere" / "digits.pt"
    argv = ["export", str(digits_run), "--format", "torchscript", "--out", str(custom)]
    assert main([*argv, "--check-examples", "50", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["path"] == str(custom) and reported["examples"] == 50 and custom.is_file()


def test_cli_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "is not a neuralab run directory" in capsys.readouterr().err


@pytest.mark.parametrize("embed_dim", [0, 8])
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_compact_ngram_tables_export_with_their_binary_search(
    tmp_path: Path, tokenizer: TextTokenizer, format: str, embed_dim: int
) -> None:
    """A model whose tables were sized to its training texts: the export looks rows up with a
    traced binary search (ONNX has no searchsorted) and folds r * w into one table; with
    embed_dim=0 (imdb-best: NB alone) too."""
    spec = TextSpec(tokenizer.vocab_size, 3, MAX_LENGTH)
    model = build_model("ngram", spec, **{**MODEL_KWARGS["ngram"], "embed_dim": embed_dim})
    texts = [torch.tensor(row) for row in tokenizer.encode(sentences(30, seed=3))]
    ids = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True)[:, :MAX_LENGTH]
    model.initialize_from_texts([(ids, torch.arange(30) % 3)])
    with torch.no_grad():
        model.nb_weight.weight.normal_()
    assert 0 < len(model.kept_rows) < model.hashed_rows
    args = {**MODEL_KWARGS["ngram"], "embed_dim": embed_dim}
    run_dir = save_run(tmp_path / "run", "ngram", tokenizer, model_object=model,
                       model={"name": "ngram", "args": args})  # fmt: skip
    result = neuralab.export(run_dir, format, check_examples=40, check_data="random")
    assert result.top1_agreement == 1.0 and result.max_abs_diff <= result.tolerance
