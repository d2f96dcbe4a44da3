"""inference/quantize.py: int8 ONNX through onnxruntime's quantizer, gated on test accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import neuralab
from neuralab.checkpoint.format import write_manifest
from neuralab.inference.exporters import ExportError
from neuralab.inference.quantize import quantize

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")


@pytest.fixture(scope="module")
def digits_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantize") / "mlp"
    neuralab.train(data="digits", model="mlp", epochs=10, out=str(out), verbose=False,
                   overrides=["model.args.width=32", "train.threads=1"])  # fmt: skip
    return out


def test_int8_keeps_the_top1_of_fp32_and_writes_contract_and_figures(digits_mlp: Path) -> None:
    result = quantize(digits_mlp, max_drop=2.0)
    assert result.path == digits_mlp / "export" / "mlp.int8.onnx" and result.path.is_file()
    assert result.top1_agreement >= 0.99 and result.examples == 359  # digits' whole test split
    assert result.bytes_int8 < result.bytes_fp32
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["file"] == "mlp.int8.onnx"
    figures = sidecar["quantization"]
    assert figures["accuracy_int8"] == result.accuracy_int8 and figures["max_drop"] == 2.0
    assert "static" in figures["method"]


def with_outlier(run: Path, out: Path) -> Path:
    """A copy of the run whose first layer gains, in every row, a weight of 300 on a pixel
    that is 0 in every digits image (its bias absorbs that pixel's constant normalised
    value): fp32 outputs are unchanged, but int8's per-row scale (largest |weight| / 127)
    rounds every other weight of the layer to zero."""
    import shutil

    shutil.copytree(run, out, ignore=shutil.ignore_patterns("export"))
    weights = load_file(str(out / "checkpoint" / "model.safetensors"))
    first = next(key for key, value in weights.items() if value.dim() == 2)
    modality = neuralab.load(run).modality
    blank = -modality.mean[0] / modality.std[0]  # pixel (0, 0) is 0 in all 1,797 images
    bias = weights[first.replace("weight", "bias")]
    bias -= (300.0 - weights[first][:, 0]) * blank
    weights[first][:, 0] = 300.0
    save_file(weights, str(out / "checkpoint" / "model.safetensors"))
    (out / "checkpoint" / "manifest.json").unlink()
    write_manifest(out / "checkpoint")
    return out


def test_an_int8_model_that_loses_too_much_is_refused_and_nothing_is_written(
    digits_mlp: Path, tmp_path: Path
) -> None:
    run = with_outlier(digits_mlp, tmp_path / "outlier")
    fp32 = neuralab.export(run, "onnx", tmp_path / "fp32.onnx", 100)
    assert fp32.top1_agreement == 1.0  # the outlier changes nothing in fp32
    with pytest.raises(ExportError, match=r"loses .* accuracy points .* nothing was written"):
        quantize(run, max_drop=0.5)
    assert not (run / "export" / "mlp.int8.onnx").exists()
    assert not list((run / "export").glob("*int8*")) and not list((run / "export").glob(".*"))


def test_a_model_without_an_int8_form_is_refused_naming_its_layers(tmp_path: Path) -> None:
    lines = ["review,label"] + [f"{'good fine' if i % 2 else 'bad poor'} film,{i % 2}"
                                for i in range(40)]  # fmt: skip
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    neuralab.train(data=f"csv:{tmp_path / 't.csv'}", model="ngram", epochs=1,
                   out=str(tmp_path / "run"), verbose=False,
                   overrides=["data.options.text_field=review", "model.args.buckets=64",
                              "model.args.embed_dim=0", "model.args.nb=true"])  # fmt: skip
    named = r"no int8 form for any layer of model 'ngram' \(layers: Dropout, Embedding; .*Gather"
    with pytest.raises(ExportError, match=named):
        quantize(tmp_path / "run")
    assert not (tmp_path / "run" / "export" / "ngram.int8.onnx").exists()


def test_a_recurrent_text_model_is_quantized_dynamically(tmp_path: Path) -> None:
    words = [["good", "fine", "great"], ["bad", "poor", "dull"]]
    lines = ["review,label"] + [
        f"{' '.join(words[i % 2][j % 3] for j in range(i % 5 + 2))} film,{i % 2}" for i in range(80)
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    neuralab.train(data=f"csv:{tmp_path / 't.csv'}", model="lstm", epochs=4,
                   out=str(tmp_path / "run"), verbose=False,
                   overrides=["data.options.text_field=review", "model.args.hidden=16",
                              "model.args.embed_dim=16", "optim.lr=0.01"])  # fmt: skip
    result = quantize(tmp_path / "run", max_drop=5.0)
    assert "dynamic" in result.method and result.top1_agreement >= 0.99
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert (result.path.parent / sidecar["input"]["tokenizer_file"]).is_file()


def test_quantize_settings_are_checked_before_any_work(digits_mlp: Path) -> None:
    with pytest.raises(ExportError, match="--max-drop must be >= 0"):
        quantize(digits_mlp, max_drop=-1)
    with pytest.raises(ExportError, match="--calibration and --check-examples >= 1"):
        quantize(digits_mlp, calibration=0)


def test_the_cli_writes_int8_and_refuses_other_formats(digits_mlp: Path, capsys) -> None:
    from neuralab.cli.main import main

    assert main(["export", str(digits_mlp), "--quantize", "int8", "--max-drop", "3"]) == 0
    out = capsys.readouterr().out
    assert "int8 ONNX" in out and "same top-1 as fp32" in out
    assert main(["export", str(digits_mlp), "--quantize", "int8", "--format", "torchscript"]) == 2
    assert "--quantize int8 writes ONNX" in capsys.readouterr().err
    assert main(["export", str(digits_mlp), "--quantize", "int8", "--check-data", "random"]) == 2
    assert "drop --check-data random" in capsys.readouterr().err


def test_outlier_copy_is_really_unchanged_in_pytorch(digits_mlp: Path, tmp_path: Path) -> None:
    run = with_outlier(digits_mlp, tmp_path / "outlier")
    before, after = neuralab.load(digits_mlp), neuralab.load(run)
    images = torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8)
    images[:, :, 0, 0] = 0
    with torch.inference_mode():
        first = before.model(before.modality.model_inputs(images))
        second = after.model(after.modality.model_inputs(images))
    torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-3)
