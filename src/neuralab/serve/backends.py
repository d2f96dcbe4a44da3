"""What runs the model's forward passes in `neuralab serve`: PyTorch (`--backend torch`, the
default) or onnxruntime on the run's ONNX export (`--backend onnx`).

Both take what the batcher gathered (decoded uint8 (C, H, W) images, or texts: tokenised here,
in the forward thread, one batch at a time) and return class probabilities (N, classes). The
ONNX file's input contract (`read_contract`) is checked against the run when loading:
image graphs take uint8 (B, C, H, W) and normalise inside, text graphs take int64 token ids
(B, T) padded with 0; int8-quantized exports (`<model>.int8.onnx`) have the same contract.
The PyTorch model is loaded either way: /explain's gradients need it.

Example:
    >>> backend = load_backend(predictor, "onnx", onnx_path=None, run_dir="runs/mnist-best")
    >>> backend.probabilities([image]).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

from neuralab.errors import ConfigError, UserError
from neuralab.inference.predict import Predictor, checkpoint_folder

BACKENDS = ("torch", "onnx")
EXPORT_EXTRA = "pip install 'neuralab[export]'"


class Backend(Protocol):
    """Runs forward passes; one call at a time, in the batcher's thread."""

    name: str

    def probabilities(self, inputs: list) -> torch.Tensor: ...

    def set_threads(self, threads: int) -> None: ...


class OnnxFileError(UserError, ValueError):
    """The ONNX file is missing, unreadable, or does not fit the run."""


class TorchBackend:
    """The run's PyTorch model, through `Predictor.probabilities`."""

    name = "torch"

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def probabilities(self, inputs: list) -> torch.Tensor:
        """Class probabilities (N, classes); no autograd graph (faster, less memory)."""
        with torch.inference_mode():
            return self.predictor.probabilities(inputs)

    def set_threads(self, threads: int) -> None:
        torch.set_num_threads(threads)


class OnnxBackend:
    """An onnxruntime session on the run's export; inputs are prepared by the run's modality.

    Args:
        predictor: the run (its modality, tokenizer and classes).
        path: the .onnx file (`neuralab export RUN --format onnx` writes it).
        threads: onnxruntime intra-op threads.
    """

    name = "onnx"

    def __init__(self, predictor: Predictor, path: Path, threads: int = 1) -> None:
        self.predictor, self.path = predictor, path
        self.session = open_session(path, threads)
        self.contract = read_contract(self.session, path)
        check_contract(self.contract, predictor, path)
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, inputs: list) -> torch.Tensor:
        """Class probabilities (N, classes): the exported graph's logits, softmaxed."""
        modality = self.predictor.modality
        examples = modality.prepare_all(inputs)
        logits = torch.empty(len(examples), len(self.predictor.classes))
        # Images: one uint8 (B, C, H, W) batch; texts: int64 (B, T) batches of similar length.
        for rows, batch in modality.batches(examples):
            output = self.session.run(None, {self.input_name: batch.numpy()})[0]
            logits[rows] = torch.from_numpy(output).float()
        return self.predictor.to_probabilities(logits)

    def set_threads(self, threads: int) -> None:
        """A new session with `threads` intra-op threads (onnxruntime fixes them at creation)."""
        self.session = open_session(self.path, threads)


def default_onnx_path(run_dir: str | Path, predictor: Predictor) -> Path:
    """`<run>/export/<model name>.onnx`, where `neuralab export RUN --format onnx` writes."""
    folder = checkpoint_folder(run_dir)
    run = folder.parent if folder.name == "checkpoint" else folder
    return run / "export" / f"{predictor.meta.model.name}.onnx"


def load_backend(
    predictor: Predictor,
    backend: str,
    onnx_path: str | Path | None,
    run_dir: str | Path,
    threads: int = 1,
) -> Backend:
    """The forward-pass runner `backend` names ("torch" or "onnx") for `predictor`.

    Raises:
        ConfigError: an unknown backend, or --onnx given with the torch backend.
        OnnxFileError: the ONNX file is missing or does not fit the run.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        if onnx_path is not None:
            raise ConfigError("--onnx is for --backend onnx; add --backend onnx to use the file")
        return TorchBackend(predictor)
    path = Path(onnx_path) if onnx_path else default_onnx_path(run_dir, predictor)
    if not path.is_file():
        raise OnnxFileError(
            f"no ONNX file at {path}: export the run first with `neuralab export {run_dir} "
            "--format onnx`, or pass the file (an int8 `<model>.int8.onnx` too) with --onnx PATH"
        )
    return OnnxBackend(predictor, path, threads)


def open_session(path: Path, threads: int):
    """An onnxruntime CPU session on `path` with `threads` intra-op threads."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"--backend onnx needs onnxruntime ({error}): {EXPORT_EXTRA}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph at a time: the batcher runs one pass at once
    options.log_severity_level = 3  # errors only; what fails comes back as our own error
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise OnnxFileError(
            f"onnxruntime cannot load {path} ({type(error).__name__}: {error}); export the "
            "run again with `neuralab export RUN --format onnx`"
        ) from None


def read_contract(session, path: Path) -> dict:
    """The export's input contract: the ONNX metadata key "neuralab", else the sidecar
    `<file>.json` (which also holds a quantized export's "quantization")."""
    sidecar = path.with_name(path.name + ".json")
    text = session.get_modelmeta().custom_metadata_map.get("neuralab")
    if text is None and sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8")
    if text is None:
        raise OnnxFileError(
            f"{path} holds no neuralab contract (metadata key 'neuralab') and has no sidecar "
            f"{sidecar.name}: it was not written by `neuralab export`; export the run with it"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise OnnxFileError(f"{path}: its neuralab contract is not valid JSON ({error})") from None


def check_contract(contract: dict, predictor: Predictor, path: Path) -> None:
    """Refuse an export of another run: kind, classes and input dtype must match."""
    kind = predictor.modality.kind
    expected_dtype = {"image": "uint8", "text": "int64"}.get(kind)
    found = {
        "kind": contract.get("kind"),
        "classes": contract.get("classes"),
        "input dtype": contract.get("input", {}).get("dtype"),
    }
    wanted = {"kind": kind, "classes": predictor.classes, "input dtype": expected_dtype}
    wrong = [key for key in wanted if found[key] != wanted[key]]
    if wrong:
        details = "; ".join(f"{key}: {found[key]!r}, the run has {wanted[key]!r}" for key in wrong)
        raise OnnxFileError(
            f"{path} does not fit this run ({details}); export this run with `neuralab export "
            "RUN --format onnx` or pass its own file with --onnx"
        )
