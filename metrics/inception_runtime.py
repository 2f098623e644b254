"""TF-Inception on a CPU inference runtime (OpenVINO or ONNX Runtime), with torch-fidelity's exact TF1 resize in front.

`accelerate(model)` turns `metrics.fid.load_inception()`'s torch module into a drop-in module with the same
call (`model(x)`, x (N, 3, H, W) uint8 -> 1-tuple of (N, 2048) float32 pool3 features) that runs the
network's convolutions through a CPU runtime, which is 2-3x faster than torch eager on a busy 2-core machine
(`benchmarks/score.py` prints both side by side). The steps:

1. Resize and scale stay outside the runtime and bit-exact with torch-fidelity: its
   `interpolate_bilinear_2d_like_tensorflow1x` to 299x299 (align_corners=False), then `(x - 128) / 128`,
   float32. `preprocess` does the same float32 operations in the same order in numpy, separably (each
   output row is the vertical blend of two horizontally blended input rows, which is how torch-fidelity's
   four-corner formula groups its operations), so its output equals torch-fidelity's bit for bit at about
   a tenth of the time (its gathers along the last axis are slow in torch; tests/test_fid.py checks equality).
2. The layers after that (`InceptionBody`: conv stem to pool3) are exported once to ONNX
   (`torch.onnx.export`, the TorchScript exporter) and the file is kept in `cache_dir` under a content key:
   the sha256 of the weights' bytes, `EXPORT_VERSION` (bump it when this export code changes), the torch
   version that exported it, and the runtime's name and version. Any change gives a new file; a stale one
   is never read.
3. The runtime runs the file in float32 only: OpenVINO with `INFERENCE_PRECISION_HINT = f32` (on CPUs with
   bf16 support it would otherwise pick bf16; the compiled model is checked to report f32), ONNX Runtime's
   CPU provider (float32 throughout). OpenVINO keeps its compiled network in `cache_dir/openvino` (its own
   `CACHE_DIR`, keyed by the model, device and settings), so later processes skip the compilation.
   No bf16, no int8. The runtimes fold batch norm into the convolutions
   and reorder sums, so features move by float32 rounding only (about 1e-5 max abs on features of scale ~5;
   FID/KID stay inside PROTOCOL.md's 1e-4 parity with torch-fidelity, tests/test_fid.py).

`cached_runtime(source_key, load, ...)` does the same without building the torch module when the converted
file for `source_key` (a key of the weights' source file and of the code that maps them) is already cached:
the torch module is loaded only if it is needed (a CUDA input, or the conversion itself).

Runtime choice (`runtime="auto"`): torch on CUDA (the runtimes here are CPU builds); on CPU OpenVINO when it
imports, else ONNX Runtime. When the chosen runtime cannot export or load, one line on stderr says so and
the torch module is used unchanged (same features, slower).
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Bump when the export below (the body, opset, names) changes: it is part of the converted file's key.
EXPORT_VERSION = 1
ONNX_OPSET = 17
INPUT_SIZE = 299
RUNTIMES = ("torch", "openvino", "onnxruntime")
_INPUT, _OUTPUT = "x", "pool3"
# torch-fidelity's FeatureExtractorInceptionV3 layers from the scaled 299x299 input to pool3, in order.
_LAYERS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "MaxPool_1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "MaxPool_2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
    "AvgPool",
)


def preprocessing_key() -> str:
    """What happens to the pixels before the network, for feature cache keys (read at call time)."""
    return f"resize=tf1-bilinear-{INPUT_SIZE}-align_corners=False|scale=(x-128)/128|float32"


def _resize_grid(in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch-fidelity's `resample_manually` grid for one axis (align_corners=False): source index below,
    above (clamped) and the float32 blend weight of each of the `INPUT_SIZE` outputs."""
    pos = np.arange(INPUT_SIZE, dtype=np.float32) * np.float32(in_size / INPUT_SIZE)
    lo = pos.astype(np.int64)  # truncation, as torch's .long() (positions are >= 0)
    return lo, np.minimum(lo + 1, in_size - 1), pos - lo.astype(np.float32)


def preprocess_array(images: np.ndarray) -> np.ndarray:
    """torch-fidelity's input steps, bit for bit: (N, 3, H, W) uint8 -> (N, 3, 299, 299) float32 in [-1, 1).

    torch-fidelity computes out = t + (b - t) * dy with t = p00 + (p01 - p00) * dx, b = p10 + (p11 - p10) * dx
    from the four corner pixels, one rounded float32 operation at a time; here t and b are rows of the
    horizontally blended image (the same values), then blended vertically the same way, then (x - 128) / 128.
    """
    x = images.astype(np.float32)
    x_lo, x_hi, dx = _resize_grid(images.shape[3])
    y_lo, y_hi, dy = _resize_grid(images.shape[2])
    rows = np.take(x, x_lo, axis=3)
    right = np.take(x, x_hi, axis=3)
    right -= rows
    right *= dx
    rows += right
    out = np.take(rows, y_lo, axis=2)
    below = np.take(rows, y_hi, axis=2)
    below -= out
    below *= dy[:, None]
    out += below
    out -= 128
    out /= 128
    return out


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's input steps, bit for bit: (N, 3, H, W) uint8 -> (N, 3, 299, 299) float32 in [-1, 1).

    The TF1-compatible bilinear resize (NOT `F.interpolate`, which differs) and the scaling of
    `FeatureExtractorInceptionV3.forward`, the same float32 operations in the same order
    (`preprocess_array`, on the CPU).
    """
    return torch.from_numpy(preprocess_array(images.detach().cpu().numpy()))


class InceptionBody(nn.Module):
    """torch-fidelity's Inception layers after the resize: (N, 3, 299, 299) float32 in [-1, 1) -> (N, 2048) pool3.

    Shares (does not copy) the modules of `metrics.fid.load_inception()`'s extractor.
    """

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(getattr(extractor, name) for name in _LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.layers(x), 1)


def weights_digest(model: nn.Module) -> str:
    """sha256 of a module's state dict: names, dtypes, shapes and bytes, in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def runtime_version(runtime: str) -> str:
    """Version string of an installed runtime ("torch", "openvino", "onnxruntime"); ImportError if absent."""
    if runtime == "openvino":
        import openvino

        return openvino.__version__
    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    if runtime == "torch":
        return torch.__version__
    raise ValueError(f"unknown Inception runtime {runtime!r}; use one of {', '.join(RUNTIMES)} or 'auto'")


def export_key(digest: str, runtime: str) -> str:
    """Content key of the converted file: weights, export code version, exporter and runtime versions."""
    text = f"weights={digest}|export={EXPORT_VERSION}|opset={ONNX_OPSET}|torch={torch.__version__}|"
    text += f"{preprocessing_key()}|runtime={runtime}-{runtime_version(runtime)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def export_onnx(extractor: nn.Module, path: Path) -> None:
    """Write `InceptionBody(extractor)` as an ONNX file (dynamic batch) to `path`, atomically."""
    # A copy in NCHW: the caller's module keeps its (channels_last) layout.
    body = InceptionBody(copy.deepcopy(extractor)).eval().to(memory_format=torch.contiguous_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                body,
                (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),),
                tmp,
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                dynamic_axes={_INPUT: {0: "n"}, _OUTPUT: {0: "n"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _openvino_runner(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    # OpenVINO's own cache of the compiled network (keyed by the file, device and settings): a later process
    # loads it instead of reading the ONNX file and compiling again (about 2 s of a short `agebench fid`).
    core.set_property({"CACHE_DIR": str(path.parent / "openvino")})
    compiled = core.compile_model(
        str(path),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            # Unpinned threads: on a shared machine a pinned thread waits for its busy core (~5% slower here).
            "ENABLE_CPU_PINNING": False,
        },
    )
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if "32" not in precision:
        raise RuntimeError(f"OpenVINO compiled the network in {precision}, not float32")
    request = compiled.create_infer_request()
    return lambda x: np.array(request.infer({0: x})[0], dtype=np.float32, copy=True)


def _onnxruntime_runner(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([_OUTPUT], {_INPUT: x})[0]


_RUNNERS = {"openvino": _openvino_runner, "onnxruntime": _onnxruntime_runner}


class RuntimeInception(nn.Module):
    """Drop-in for `metrics.fid.load_inception()`'s module: `model(x)`, x (N, 3, H, W) uint8 in [0, 255] ->
    1-tuple of (N, 2048) float32 pool3 features, with the convolutions run by `runtime` on the CPU.

    Attributes:
        extractor: the torch module (inputs on another device than the CPU go through it unchanged). Given
            as a function that builds it, it is built on first use, so scoring on the CPU never pays for it.
        device: where inputs go (`inception_features` moves them there): the CPU when a runtime runs, else
            the torch module's device.
        runtime: "openvino", "onnxruntime" or "torch".
        namespace: what besides the weights shapes a feature (preprocessing, runtime and its version), for
            cache keys.
    """

    def __init__(
        self,
        extractor: nn.Module | Callable[[], nn.Module],
        runner: Callable[[np.ndarray], np.ndarray] | None,
        runtime: str,
    ) -> None:
        super().__init__()
        self._build_extractor = None if isinstance(extractor, nn.Module) else extractor
        if isinstance(extractor, nn.Module):
            self._modules["extractor"] = extractor  # a registered submodule, read through the property below
        self.runner = runner
        self.runtime = runtime if runner is not None else "torch"
        self.namespace = f"{preprocessing_key()}|runtime={self.runtime}-{runtime_version(self.runtime)}-cpu"

    @property
    def extractor(self) -> nn.Module:
        if "extractor" not in self._modules:
            self._modules["extractor"] = self._build_extractor()
        return self._modules["extractor"]

    @property
    def device(self) -> torch.device:
        if self.runner is not None:
            return torch.device("cpu")
        return next(self.extractor.parameters()).device

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.runner is None or x.device.type != "cpu":
            return self.extractor(x)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Inception input must be (N, 3, H, W) uint8, got {tuple(x.shape)} {x.dtype}")
        return (torch.from_numpy(self.runner(preprocess_array(x.numpy()))),)


def extractor_namespace(model: nn.Module) -> str:
    """What besides the weights shapes this extractor's features: its preprocessing, runtime and version, and
    the device type for torch (CUDA and CPU convolutions round differently). Mixed into feature cache keys."""
    if isinstance(model, RuntimeInception) and model.runner is not None:
        return model.namespace
    if isinstance(model, RuntimeInception):
        where = model.device.type
    else:
        params = next(model.parameters(), None)
        where = params.device.type if params is not None else "cpu"
    return f"{preprocessing_key()}|runtime=torch-{torch.__version__}-{where}"


def pick_runtime(device: str | torch.device = "cpu") -> str:
    """The runtime for `device`: "torch" off the CPU; on the CPU the first of OpenVINO, ONNX Runtime that imports."""
    if torch.device(device).type != "cpu":
        return "torch"
    for runtime in ("openvino", "onnxruntime"):
        try:
            runtime_version(runtime)
            return runtime
        except ImportError:
            continue
    return "torch"


def accelerate(
    model: nn.Module,
    device: str | torch.device = "cpu",
    runtime: str = "auto",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> nn.Module:
    """`model` (from `metrics.fid.load_inception()`) on `device`, run through a CPU runtime where one applies.

    Args:
        model: torch-fidelity's `FeatureExtractorInceptionV3`; any other module (e.g. a test stub) is only
            moved to `device` and returned, since only the known network can be exported.
        device: where it runs; not the CPU -> the torch module on that device.
        runtime: "auto" (`pick_runtime`), "openvino", "onnxruntime" or "torch".
        threads: the runtime's intra-op threads; default `torch.get_num_threads()`.
        cache_dir: folder of converted files (created); None -> a temporary folder (converted each call).
    Returns:
        A `RuntimeInception` (its `runtime` says what runs), or `model` moved to `device`.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if runtime != "auto" and runtime not in RUNTIMES:
        raise ValueError(f"unknown Inception runtime {runtime!r}; use one of {', '.join(RUNTIMES)} or 'auto'")
    chosen = pick_runtime(device) if runtime == "auto" else runtime
    if not isinstance(model, FeatureExtractorInceptionV3) or torch.device(device).type != "cpu":
        return model.to(device)
    if chosen == "torch":
        return RuntimeInception(model, None, "torch")
    runner = _convert_and_load(model, chosen, threads or torch.get_num_threads(), cache_dir)
    return RuntimeInception(model, runner, chosen if runner is not None else "torch")


def _convert_and_load(
    model: nn.Module, runtime: str, threads: int, cache_dir: str | Path | None, alias: Path | None = None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The runner of `model` converted for `runtime` (converted file kept in `cache_dir`; `alias`, if given,
    records its name); None, with one line on stderr, when the runtime cannot export or load it."""
    try:
        runtime_version(runtime)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(cache_dir) if cache_dir is not None else Path(tmp)
            path = folder / f"inception-{export_key(weights_digest(model), runtime)}.onnx"
            if not path.is_file():
                export_onnx(model, path)
            runner = _RUNNERS[runtime](path, threads)
            if alias is not None:
                _write_atomic(alias, path.name)
            return runner
    except Exception as exc:  # any failure of an optional runtime falls back to the reference path
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"TF-Inception: {runtime} unavailable ({first}); running torch eager instead", file=sys.stderr)
        return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cached_runtime(
    source_key: str,
    load: Callable[[], nn.Module],
    runtime: str = "auto",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> nn.Module:
    """`accelerate(load(), "cpu", runtime, threads, cache_dir)`, without calling `load` when it is not needed.

    A small alias file in `cache_dir`, keyed like the converted file but on `source_key` instead of the
    weights' digest (`export_key(source_key, runtime)`), names the converted file made from the module that
    `load` built. When both are there, the runtime loads that file and `load` runs only if the torch module
    is needed later (`RuntimeInception.extractor`): building TF-Inception in torch takes longer than running
    the converted network on a few hundred images. Otherwise `load()` is converted as by `accelerate` and the
    alias written.

    Args:
        source_key: identifies the weights `load` builds: e.g. the sha256 of the weights file and of the code
            that maps it onto the module (a change of either must change the key).
        load: builds `metrics.fid.load_inception()`'s module.
        runtime, threads, cache_dir: as `accelerate`; without a `cache_dir` this is `accelerate(load(), ...)`.
    Returns:
        A `RuntimeInception` on the CPU.
    """
    if runtime != "auto" and runtime not in RUNTIMES:
        raise ValueError(f"unknown Inception runtime {runtime!r}; use one of {', '.join(RUNTIMES)} or 'auto'")
    chosen = pick_runtime("cpu") if runtime == "auto" else runtime
    if cache_dir is None or chosen == "torch":
        return accelerate(load(), "cpu", chosen, threads, cache_dir)
    threads = threads or torch.get_num_threads()
    folder = Path(cache_dir)
    alias = folder / f"inception-source-{export_key(source_key, chosen)}.txt"
    target = folder / alias.read_text().strip() if alias.is_file() else None
    if target is not None and target.is_file():
        try:
            return RuntimeInception(load, _RUNNERS[chosen](target, threads), chosen)
        except Exception:  # an unreadable cached file: converted again below, from the torch module
            pass
    folder.mkdir(parents=True, exist_ok=True)
    model = load()
    runner = _convert_and_load(model, chosen, threads, folder, alias)
    return RuntimeInception(model, runner, chosen if runner is not None else "torch")
