"""Optional scoring backends, used only when their weights are already on disk (agebench never downloads).

Two alternatives to the bundled defaults, chosen in `params.yaml`:

- `evaluate.age_backend: deepface` -> `deepface_age_fn()`: deepface's apparent-age model (VGG-Face base,
  101 softmax classes, age = sum(p * [0..100])), called per image through `DeepFace.analyze`.
- `evaluate.id_backend: facenet` -> `facenet_descriptor_fn(evaluate.facenet_weights)`: facenet-pytorch's
  `InceptionResnetV1` (FaceNet, 512-d L2-normalised embeddings) with a state dict the user provides.

Both return the callables `metrics.suite.Scorer` expects (`AgeFn`, `DescriptorFn`). Every problem a user can fix
(package missing, weight file missing or wrong) raises `metrics.backbones.BackboneError` before anything runs,
with the exact path expected, where the file comes from and the install command.

Failure rule shared by both (same as `metrics.identity`): images smaller than `MIN_IMAGE_SIZE` pixels in height
or width are failures (NaN age, NaN descriptor row with `failed=True`); so is any non-finite network output.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metrics.backbones import BackboneError

MIN_IMAGE_SIZE = 32  # same rule as metrics.identity: below this no face network sees a usable face

# ---------------------------------------------------------------------------------------------------------------
# deepface age

DEEPFACE_INSTALL = 'pip install -e ".[deepface]"'
DEEPFACE_INPUT_SIZE = 224
# deepface picks its weight file by "backend engine" (deepface.commons.backend_utils in recent versions; releases
# without that module run TensorFlow only). File names and download sources as in deepface's
# deepface/models/demography/{tf,pytorch,onnx}/Age.py (older releases: demography/Age.py, the .h5 only).
_DEEPFACE_RELEASES = "https://github.com/serengil/deepface_models/releases/download/v1.0/"
_DEEPFACE_HF = "https://huggingface.co/serengil/deepface/resolve/main/"
DEEPFACE_AGE_FILES: dict[str, str] = {
    "tensorflow": "age_model_weights.h5",
    "pytorch": "age_model_weights.pth",
    "onnx": "age_model_weights.onnx",
}


def deepface_home() -> Path:
    """deepface's home folder: `$DEEPFACE_HOME`, else the user's home (deepface.commons.folder_utils)."""
    return Path(os.environ.get("DEEPFACE_HOME") or Path.home())


def _deepface_engine() -> str:
    """The backend engine the installed deepface will run on (tensorflow, pytorch or onnx)."""
    try:
        backend_utils = importlib.import_module("deepface.commons.backend_utils")
    except ModuleNotFoundError:
        return "tensorflow"
    return str(backend_utils.get_backend_engine())


def deepface_age_weights_path() -> Path:
    """Path of deepface's age weight file for the installed deepface; BackboneError when deepface or it is missing.

    The file must already be at `$DEEPFACE_HOME/.deepface/weights/<file>` (DEEPFACE_HOME defaults to the home
    folder); `<file>` is `age_model_weights.h5` on deepface's TensorFlow engine (the only one in older releases),
    `.pth` on its PyTorch engine and `.onnx` on its onnxruntime engine.
    """
    try:
        importlib.import_module("deepface")
    except ImportError as err:
        raise BackboneError(
            f"evaluate.age_backend: deepface needs the deepface package, which is not importable ({err}); "
            f"fix: {DEEPFACE_INSTALL} in a separate virtual environment (deepface installs opencv-contrib, whose "
            "cv2 replaces opencv-python's, and a newer onnxruntime), or use evaluate.age_backend: onnx"
        ) from None
    try:
        engine = _deepface_engine()
    except ValueError as err:  # deepface's own message: an enforced engine that is not installed
        raise BackboneError(f"deepface cannot choose its backend engine: {err}") from None
    name = DEEPFACE_AGE_FILES.get(engine)
    if name is None:
        raise BackboneError(
            f"deepface backend engine {engine!r} is unknown to agebench; known: {sorted(DEEPFACE_AGE_FILES)}"
        )
    path = deepface_home() / ".deepface" / "weights" / name
    if not path.is_file():
        home = os.environ.get("DEEPFACE_HOME")
        raise BackboneError(
            f"deepface age model weights not found: expected {path} (deepface's {engine} engine reads "
            f"$DEEPFACE_HOME/.deepface/weights/{name}; DEEPFACE_HOME is "
            f"{repr(home) if home else 'unset, so the home folder is used'}). agebench never downloads weights: "
            f"fetch {_DEEPFACE_RELEASES}{name} (mirror: {_DEEPFACE_HF}{name}), the URL deepface itself downloads "
            f"from, and put it at {path}, or set DEEPFACE_HOME to the folder that holds .deepface/weights/{name}"
        )
    return path


def deepface_age_fn() -> Callable[[torch.Tensor], np.ndarray]:
    """deepface's apparent-age estimator as an `AgeFn`, after checking the package and its weight file.

    Returns `ages(images)`: `images` `(N, 3, H, W)` uint8 RGB in [0, 255] -> `(N,)` float64 ages in years, NaN
    where it failed (image under `MIN_IMAGE_SIZE`, deepface raised ValueError, or no finite age came back).

    Each image goes through `DeepFace.analyze(bgr_hwc_uint8, actions=["age"], detector_backend="skip",
    enforce_detection=False, silent=True)`: channels flipped to BGR as deepface expects of arrays; "skip" takes
    the whole (already aligned) crop as the face. deepface then resizes it to 224x224 keeping the aspect ratio
    (`cv2.resize`, bilinear; the shorter side padded with black, so square crops are just resized, e.g.
    128 -> 224 upsampled) and `analyze` returns `int(age)`: ages are whole years, truncated toward zero
    (about 0.5 year lower than the model's expectation on average).

    Raises BackboneError when deepface is not importable, its weight file is missing, or a first call on a
    grey image fails (a corrupt weight file or a broken TensorFlow install would otherwise look like NaN ages).
    """
    weights = deepface_age_weights_path()
    try:
        from deepface import DeepFace
    except (ImportError, ValueError) as err:  # deepface raises ValueError e.g. when tf-keras is missing
        raise BackboneError(f"deepface is installed but cannot be imported: {err}; fix: {DEEPFACE_INSTALL}") from None

    def analyze(bgr: np.ndarray) -> float:
        result = DeepFace.analyze(
            img_path=bgr, actions=["age"], detector_backend="skip", enforce_detection=False, silent=True
        )
        first = result[0] if isinstance(result, list) else result  # releases before 0.0.80 returned one dict
        return float(first["age"])

    try:  # loads the model once, outside the per-image ValueError net below
        analyze(np.full((DEEPFACE_INPUT_SIZE, DEEPFACE_INPUT_SIZE, 3), 128, np.uint8))
    except Exception as err:
        raise BackboneError(f"deepface could not run its age model from {weights}: {err!r}") from err

    def ages(images: torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(images)
        assert x.ndim == 4 and x.shape[1] == 3 and x.dtype == torch.uint8, (x.shape, x.dtype)
        out = np.full(len(x), np.nan)
        if min(x.shape[2:]) < MIN_IMAGE_SIZE:
            return out
        for i, chw in enumerate(x.cpu()):
            bgr = np.ascontiguousarray(chw.permute(1, 2, 0).numpy()[:, :, ::-1])
            try:
                age = analyze(bgr)
            except ValueError:  # deepface's way of saying it could not handle this image
                continue
            out[i] = age if math.isfinite(age) else np.nan
        return out

    return ages


# ---------------------------------------------------------------------------------------------------------------
# facenet-pytorch InceptionResnetV1

FACENET_INSTALL = "pip install --no-deps facenet-pytorch==2.6.0"  # its pins (numpy<2, torch<2.3) cannot resolve
FACENET_WEIGHTS_FILE = "20180402-114759-vggface2.pt"
# The URL facenet-pytorch 2.6.0 downloads from (facenet_pytorch/models/inception_resnet_v1.py, load_weights).
FACENET_WEIGHTS_URL = f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{FACENET_WEIGHTS_FILE}"
FACENET_INPUT_SIZE = 160
FACENET_DIM = 512
# Euclidean distance between L2-normalised FaceNet embeddings (range [0, 2]); NOT dlib's 0.6 on its own 128-d
# space. ~1.1 is the value commonly used with Sandberg's 20180402-114759 VGGFace2 model (its LFW 10-fold
# validation picks thresholds around 1.1-1.2). Not calibrated on UTKFace here: report real-pair rates beside it.
FACENET_THRESHOLD = 1.1


def _weights_hint() -> str:
    return (
        f"get {FACENET_WEIGHTS_FILE} (the VGGFace2 state dict facenet-pytorch itself downloads) from "
        f"{FACENET_WEIGHTS_URL} on a machine with internet and set evaluate.facenet_weights to its path; "
        "agebench never downloads weights"
    )


def load_facenet(weights_path: str | Path) -> nn.Module:
    """facenet-pytorch's `InceptionResnetV1` in eval mode, float32, with the state dict at `weights_path`.

    The published state dicts also hold the training classifier (`logits.*`, 8631 VGGFace2 identities), which
    embeddings never use: those keys are dropped and everything else must match exactly (strict load).
    Raises BackboneError naming `evaluate.facenet_weights` when the path is empty, missing or not such a file,
    and with the install command when facenet-pytorch is not importable.
    """
    if not str(weights_path):
        raise BackboneError(
            f"evaluate.id_backend: facenet needs evaluate.facenet_weights, which is empty; {_weights_hint()}"
        )
    path = Path(weights_path)
    if not path.is_file():
        raise BackboneError(f"evaluate.facenet_weights: file {path} not found; {_weights_hint()}")
    try:
        from facenet_pytorch import InceptionResnetV1
    except ImportError as err:
        raise BackboneError(
            f"evaluate.id_backend: facenet needs facenet-pytorch, which is not importable ({err}); "
            f"fix: {FACENET_INSTALL} (--no-deps: its own pins on numpy, torch and Pillow conflict with agebench's)"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(
            f"evaluate.facenet_weights: {path} is not a torch state dict ({err!r}); {_weights_hint()}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(
            f"evaluate.facenet_weights: {path} does not hold a state dict of tensors; {_weights_hint()}"
        )
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net = InceptionResnetV1(pretrained=None, classify=False)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BackboneError(
            f"evaluate.facenet_weights: {path} is not an InceptionResnetV1 state dict: {err}; {_weights_hint()}"
        ) from None
    return net.eval().float().requires_grad_(False)


def facenet_preprocess(images: torch.Tensor) -> torch.Tensor:
    """`(N, 3, H, W)` uint8 RGB in [0, 255] -> `(N, 3, 160, 160)` float32 network input, about [-1, 1].

    The whole aligned crop is resized to 160x160 (bilinear, antialiased when shrinking, i.e. like PIL's
    bilinear resize), then facenet-pytorch's `fixed_image_standardization`: (x - 127.5) / 128. No detector
    runs: facenet-pytorch's MTCNN would crop a tighter box, so absolute distances differ from published ones.
    """
    x = torch.as_tensor(images).float()
    if tuple(x.shape[2:]) != (FACENET_INPUT_SIZE, FACENET_INPUT_SIZE):
        x = F.interpolate(
            x, size=(FACENET_INPUT_SIZE, FACENET_INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    return (x - 127.5) / 128.0


@torch.inference_mode()
def facenet_descriptors(images: torch.Tensor, net: nn.Module, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """FaceNet descriptors of whole aligned face images.

    images: `(N, 3, H, W)` uint8 RGB in [0, 255]; net: from `load_facenet`. Returns descriptors `(N, 512)`
    float64, unit L2 norm (NaN rows where failed) and `failed` `(N,)` bool (see the module's failure rule).
    """
    x = torch.as_tensor(images)
    assert x.ndim == 4 and x.shape[1] == 3 and x.dtype == torch.uint8, (x.shape, x.dtype)
    n = len(x)
    desc = np.full((n, FACENET_DIM), np.nan)
    failed = np.ones(n, dtype=bool)
    if n == 0 or min(x.shape[2:]) < MIN_IMAGE_SIZE:
        return desc, failed
    device = next(net.parameters()).device
    for start in range(0, n, batch_size):
        out = net(facenet_preprocess(x[start : start + batch_size].to(device))).double().cpu().numpy()
        # renormalise in float64: the float32 norm is only 1 +- 1e-7
        out = out / np.linalg.norm(out, axis=1, keepdims=True)
        ok = np.isfinite(out).all(axis=1)
        desc[start : start + len(out)][ok] = out[ok]
        failed[start : start + len(out)] = ~ok
    return desc, failed


def facenet_descriptor_fn(
    weights_path: str, batch_size: int = 32, device: str | torch.device = "cpu"
) -> Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]:
    """A `DescriptorFn` for FaceNet: `(N, 3, H, W)` uint8 RGB -> (`(N, 512)` float64 unit-norm, `(N,)` bool failed).

    Loads the weights now (`load_facenet`, which raises BackboneError naming `evaluate.facenet_weights` or the
    install command). Verify with `FACENET_THRESHOLD` (~1.1), not dlib's 0.6: see its comment.
    """
    net = load_facenet(weights_path).to(device)

    def descriptors(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return facenet_descriptors(images, net, batch_size=batch_size)

    return descriptors
