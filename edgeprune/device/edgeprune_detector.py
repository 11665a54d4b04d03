"""Run an edgeprune deploy bundle on a device with only numpy and the device's own runtime.

This file is copied next to the model, so it must not import edgeprune, torch or ultralytics
at top level. Preprocessing and decoding mirror the host pipeline (letterbox with grey 114,
RGB 0..1, boxes divided by imgsz, class-aware NMS), so device detections match what the host
evaluated.

    detector = Detector.from_bundle("dist/rpi")
    for d in detector(rgb_uint8_hwc):
        print(d.class_name, d.score, d.x1, d.y1, d.x2, d.y2)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA = "metadata.json"
ENGINE = "model.engine"  # TensorRT engines are built per GPU and TensorRT version, on the device
COREML_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")


class BundleError(Exception):
    """The bundle cannot run as it is: missing file, wrong runtime, runtime package not installed."""


class IntegrityError(BundleError):
    """The model on disk is not the one metadata.json describes (tampered, truncated or swapped)."""


@dataclass(frozen=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    class_name: str


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed on the model's square input, to map boxes back to it."""

    scale: float
    pad_x: int
    pad_y: int

    def to_original(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        out = np.array(boxes, dtype=np.float32, copy=True)
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale).clip(0, width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale).clip(0, height)
        return out


# --- bundle files ---------------------------------------------------------------------------

def sha256_path(path: Path) -> str:
    """sha256 of a file; a folder model (Core ML .mlpackage) hashes its sorted relative paths and file hashes."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_path(item)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_sha256(data: dict) -> str:
    """sha256 of a JSON document independent of its formatting (a latency table records its probe's)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_metadata(bundle: Path) -> dict:
    path = Path(bundle) / METADATA
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} not found: --bundle must point at a dist/<target>/ folder") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from None


def model_path(bundle: Path, meta: dict) -> Path:
    name = meta.get("model")
    if not name:
        raise BundleError(f"{METADATA} names no model file")
    path = Path(bundle) / name
    if not path.exists():
        raise BundleError(f"model file {path} listed in {METADATA} does not exist")
    return path


def listed_sha256(bundle: Path, meta: dict) -> str:
    """The sha256 metadata.json lists for its model (IntegrityError when it lists none)."""
    path = model_path(bundle, meta)
    files = meta.get("files")
    if not isinstance(files, dict) or not files.get(path.name):
        raise IntegrityError(f"{METADATA} lists no sha256 for {path.name}, so it cannot be verified")
    return files[path.name]


def verify_model(bundle: Path, meta: dict) -> str:
    """Check the whole bundle against metadata["files"] before anything runs; returns the model's sha256.

    Every listed file is checked (model, scripts, report, manifest), not only the model: a changed
    decoding script or metadata-adjacent file is as wrong on a device as a changed model.
    """
    sha, model = listed_sha256(bundle, meta), meta["model"]
    problems = []
    for name, expected in sorted(meta["files"].items(), key=lambda item: item[0] != model):  # the model first
        item = Path(bundle) / name
        if not item.exists():
            problems.append(f"{name} is missing")
            continue
        actual = sha256_path(item)
        if actual != expected:
            problems.append(f"{name}: expected sha256 {expected}, got {actual}")
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise IntegrityError(f"bundle failed its integrity check: {'; '.join(problems[:2])}{more} "
                             "(re-copy the whole bundle)")
    return sha


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _require(module: str, pip: str):
    """Import a runtime only when it is used, naming the package to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BundleError(f"runtime module {module!r} is not installed ({exc}); install it with: pip install {pip}") \
            from None


# --- images ---------------------------------------------------------------------------------

@functools.cache
def _pil_image():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 HWC with Pillow or, failing that, OpenCV."""
    image_module = _pil_image()
    if image_module is not None:
        with image_module.open(path) as image:
            return np.asarray(image.convert("RGB"))
    try:
        import cv2
    except ImportError:
        raise ImportError("decoding image files needs Pillow or OpenCV: pip install pillow") from None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's bilinear resize when installed (the host pipeline's exact resize), else numpy."""
    image_module = _pil_image()
    if image_module is None:
        return resize_bilinear_numpy(image, width, height)
    return np.asarray(image_module.fromarray(image).resize((width, height), image_module.BILINEAR))


def resize_bilinear_numpy(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Half-pixel-centre bilinear; equals Pillow when enlarging, Pillow also antialiases when shrinking."""
    y0, y1, wy = _bilinear_taps(image.shape[0], height)
    x0, x1, wx = _bilinear_taps(image.shape[1], width)
    pixels = image.astype(np.float32)
    rows = pixels[y0] * (1 - wy)[:, None, None] + pixels[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _bilinear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).clip(0, src - 1)
    low = np.floor(pos).astype(np.intp)
    return low, np.minimum(low + 1, src - 1), (pos - low).astype(np.float32)


def letterbox(image: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and paste centred on a size x size grey canvas (as on the host)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got shape {image.shape} dtype {image.dtype}")
    height, width = image.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = image if (new_w, new_h) == (width, height) else resize_bilinear(image, new_w, new_h)
    canvas = np.full((size, size, 3), pad_value, np.uint8)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(scale, pad_x, pad_y)


# --- decoding -------------------------------------------------------------------------------

def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Greedy NMS, class-aware by moving each class's boxes into a coordinate range of its own."""
    if len(boxes) == 0:
        return np.empty(0, np.intp)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (classes.astype(np.float32) * span)[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < max_det:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter = ((np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])).clip(0)
                 * (np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])).clip(0))
        overlap = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.intp)


def decode(raw: np.ndarray, end2end: bool, conf: float, iou: float, max_det: int, scale: float = 1.0):
    """One image's raw output -> (xyxy boxes in input pixels, scores, classes), best first.

    Anchor heads give (4 + nc, anchors) with xywh boxes: confidence filter, then class-aware NMS.
    End-to-end heads (YOLOv10/YOLO26) give (k, 6) rows x1 y1 x2 y2 score class: no NMS. `scale`
    undoes boxes divided by the input size. The host evaluator runs this same function.
    """
    if end2end:
        pred = raw[raw[:, 4] > conf]
        pred = pred[np.argsort(-pred[:, 4], kind="stable")[:max_det]]
        return pred[:, :4] * scale, pred[:, 4], pred[:, 5].astype(np.intp)
    class_scores = raw[4:]
    classes = class_scores.argmax(0)
    scores = class_scores[classes, np.arange(class_scores.shape[1])]
    keep = scores > conf
    boxes = xywh_to_xyxy(raw[:4, keep].T * scale)
    scores, classes = scores[keep], classes[keep]
    order = nms(boxes, scores, classes, iou, max_det)
    return boxes[order], scores[order], classes[order]


def is_end2end(raw: np.ndarray) -> bool:
    """(B, k, 6) is an end-to-end head's output; (B, 4 + nc, anchors) an anchor head's."""
    return raw.ndim == 3 and raw.shape[2] == 6 and raw.shape[1] != 6


# --- backends: each takes (1, 3, S, S) float32 and returns the raw output as float32 ---------

TFLITE_RUNTIMES = (("ai_edge_litert.interpreter", "ai-edge-litert", "litert"),
                   ("tflite_runtime.interpreter", "tflite-runtime", "tflite-runtime"))


class TFLiteBackend:
    """LiteRT (or the older tflite-runtime); integer I/O is (de)quantized with the tensor's own parameters."""

    def __init__(self, path: Path, threads: int | None = None):
        module, self.package, self.name = next(
            (r for r in TFLITE_RUNTIMES if importlib.util.find_spec(r[0].split(".")[0]) is not None), (None,) * 3)
        if module is None:
            raise BundleError("no TFLite runtime is installed; install it with: pip install ai-edge-litert "
                              "(or pip install tflite-runtime on older devices)")
        self.interpreter = importlib.import_module(module).Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape"])

    def run(self, x: np.ndarray) -> np.ndarray:
        dtype = self.inp["dtype"]
        if dtype != np.float32:
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.inp["index"], x.astype(dtype, copy=False))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.out["index"])
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y


class OnnxRuntimeBackend:
    """ONNX Runtime, CPU by default; providers listed but not installed are skipped.

    Worker threads block instead of spin-waiting between runs (`spin=False`): a spinning session burns the
    cores that the rest of a robot's or car's software (and any other session) needs, and stalls them, for a
    little single-session speed (README, "ONNX Runtime without spin-waiting"). The validation scripts time
    the same setting the detector runs.
    """

    package = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers=("CPUExecutionProvider",),
                 spin: bool = False):
        ort = _require("onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        usable = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=usable)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.name = f"onnxruntime ({self.session.get_providers()[0]})"

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


def build_engine(onnx_path: Path, engine_path: Path, precision: str) -> Path:
    """Build a TensorRT engine from the bundle's ONNX; INT8 comes from its QDQ nodes, no calibrator."""
    trt = _require("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implicit since TensorRT 10
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if precision in ("int8", "fp16"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left unquantized may still run in FP16
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    atomic_write(Path(engine_path), bytes(serialized))
    return Path(engine_path)


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file + os.replace in the same folder, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artefacts and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _CudaPythonMemory:
    """Device buffers, copies and CUDA graphs through cuda-python's runtime bindings."""

    def __init__(self, cudart):
        self.rt = cudart
        self.stream = self._call(cudart.cudaStreamCreate())
        self.stream_handle = int(self.stream)

    def _call(self, result):
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            raise BundleError(f"CUDA call failed: {err}")
        return values[0] if values else None

    def empty(self, shape: tuple, dtype: np.dtype):
        return self._call(self.rt.cudaMalloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)), shape, np.dtype(dtype)

    def pointer(self, buffer) -> int:
        return int(buffer[0])

    def upload(self, buffer, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host, dtype=buffer[2])
        self._call(self.rt.cudaMemcpyAsync(buffer[0], host.ctypes.data, host.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def download(self, buffer) -> np.ndarray:
        host = np.empty(buffer[1], buffer[2])
        self._call(self.rt.cudaMemcpyAsync(host.ctypes.data, buffer[0], host.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        self.synchronize()
        return host

    def synchronize(self) -> None:
        self._call(self.rt.cudaStreamSynchronize(self.stream))

    def capture(self, enqueue):
        self._call(self.rt.cudaStreamBeginCapture(self.stream,
                                                  self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        enqueue()
        graph = self._call(self.rt.cudaStreamEndCapture(self.stream))
        executable = self._call(self.rt.cudaGraphInstantiate(graph, 0))
        return lambda: self._call(self.rt.cudaGraphLaunch(executable, self.stream))


class _TorchMemory:
    """The same operations through torch.cuda, for devices (e.g. Jetson images) that ship torch."""

    def __init__(self, torch):
        if not torch.cuda.is_available():
            raise BundleError("torch is installed but sees no CUDA device")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.stream_handle = self.stream.cuda_stream

    def empty(self, shape: tuple, dtype: np.dtype):
        return self.torch.empty(shape, dtype=self.torch.from_numpy(np.empty(0, dtype)).dtype, device="cuda")

    def pointer(self, buffer) -> int:
        return buffer.data_ptr()

    def upload(self, buffer, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buffer.copy_(self.torch.from_numpy(np.ascontiguousarray(host)))

    def download(self, buffer) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            return buffer.cpu().numpy()  # .cpu() waits for the current (our) stream

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, enqueue):
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            enqueue()

        def replay():  # replay() launches on the current stream; keep it ordered with our copies
            with self.torch.cuda.stream(self.stream):
                graph.replay()

        return replay


def _cuda_memory():
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return _CudaPythonMemory(importlib.import_module(module))
        except ImportError:
            continue
    if importlib.util.find_spec("torch") is not None:
        return _TorchMemory(importlib.import_module("torch"))
    raise BundleError("TensorRT needs CUDA buffers; install them with: pip install cuda-python "
                      "(or use a torch build with CUDA)")


class TensorRTBackend:
    """A serialized TensorRT engine; built from the bundle's ONNX on first use when absent."""

    package = "tensorrt"

    def __init__(self, onnx_path: Path, engine_path: Path, precision: str = "int8"):
        trt = _require("tensorrt", "tensorrt")
        if not Path(engine_path).exists():
            build_engine(onnx_path, engine_path, precision)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BundleError(f"{engine_path} cannot be deserialized (built for another GPU or TensorRT version?); "
                              f"delete it to rebuild from {Path(onnx_path).name}")
        self.context = self.engine.create_execution_context()
        self.cuda = _cuda_memory()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_name = inputs[0], next(n for n in names if n not in inputs)
        self.buffers = {n: self._bind(trt, n) for n in names}
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.name = "tensorrt"
        self.launch = self._enqueue

    def _bind(self, trt, name: str):
        shape = tuple(self.engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise BundleError(f"engine tensor {name} has a dynamic shape {shape}; export the ONNX with a static shape")
        buffer = self.cuda.empty(shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
        self.context.set_tensor_address(name, self.cuda.pointer(buffer))
        return buffer

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise BundleError("TensorRT execute_async_v3 failed")

    def enable_cuda_graph(self) -> None:
        """Replay one captured launch per inference, removing per-kernel CPU launch cost."""
        self._enqueue()  # TensorRT needs one enqueue before capture to finish its lazy setup
        self.cuda.synchronize()
        self.launch = self.cuda.capture(self._enqueue)
        self.name = "tensorrt (cuda graph)"

    def run(self, x: np.ndarray) -> np.ndarray:
        self.cuda.upload(self.buffers[self.input_name], x)
        self.launch()
        return self.cuda.download(self.buffers[self.output_name]).astype(np.float32)


class CoreMLBackend:
    """coremltools MLModel.predict; Core ML only executes on macOS."""

    package = "coremltools"

    def __init__(self, path: Path, compute_units: str = "ALL"):
        if platform.system() != "Darwin":
            raise BundleError(f"Core ML models run only on macOS (this is {platform.system()}); "
                              f"run this on a Mac or use Xcode's performance report")
        if compute_units not in COREML_UNITS:
            raise BundleError(f"unknown Core ML compute units {compute_units!r}; use one of {', '.join(COREML_UNITS)}")
        ct = _require("coremltools", "coremltools")
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        description = self.model.get_spec().description
        self.input_name, self.output_name = description.input[0].name, description.output[0].name
        self.input_shape = tuple(int(d) for d in description.input[0].type.multiArrayType.shape)
        self.name = f"coreml ({compute_units})"

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict({self.input_name: x})[self.output_name], dtype=np.float32)


MODEL_SUFFIXES = {"tflite": (".tflite",), "onnxruntime": (".onnx",), "tensorrt": (".onnx",),
                  "coreml": (".mlpackage", ".mlmodel")}


def check_model_kind(runtime: str, model: Path) -> Path:
    """Refuse a model the runtime cannot load (e.g. a .tflite given to validate_onnx.py) with a clear message."""
    if runtime not in MODEL_SUFFIXES:
        raise BundleError(f"unknown runtime {runtime!r}; use one of {', '.join(MODEL_SUFFIXES)}")
    if model.suffix not in MODEL_SUFFIXES[runtime]:
        raise BundleError(f"runtime {runtime} needs a {' or '.join(MODEL_SUFFIXES[runtime])} model, "
                          f"but this bundle holds {model.name}")
    return model


def open_backend(runtime: str, bundle: Path, meta: dict, threads: int | None, **options):
    """The backend for a runtime name; `tensorrt` runs the ONNX on ONNX Runtime when TensorRT is absent."""
    model = check_model_kind(runtime, model_path(bundle, meta))
    if runtime == "tflite":
        return TFLiteBackend(model, threads)
    if runtime == "onnxruntime":
        return OnnxRuntimeBackend(model, threads, **options)
    if runtime == "coreml":
        return CoreMLBackend(model, **options)
    if importlib.util.find_spec("tensorrt") is None:
        backend = OnnxRuntimeBackend(model, threads, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
        backend.name = "onnxruntime (tensorrt unavailable)"
        return backend
    return TensorRTBackend(model, Path(bundle) / ENGINE, meta.get("precision", "int8"), **options)


# --- the detector ---------------------------------------------------------------------------

class Detector:
    """Letterbox -> model -> decode + NMS -> boxes in original image pixels."""

    def __init__(self, backend, meta: dict, model_sha256: str | None = None, conf: float | None = None,
                 iou: float | None = None, max_det: int | None = None):
        self.backend = backend
        self.meta = meta
        self.model_sha256 = model_sha256
        if meta.get("input", {}).get("layout", "NCHW") != "NCHW":
            raise BundleError(f"input layout {meta['input']['layout']!r} is not supported; bundles use NCHW")
        shape = tuple(backend.input_shape)
        # the model file is the authority on its input size when metadata disagrees
        self.imgsz = int(shape[2]) if len(shape) == 4 and isinstance(shape[2], int) else int(meta["imgsz"])
        self.end2end = bool(meta.get("end2end", False))
        self.normalized = bool(meta.get("boxes_normalized", True))
        self.pad_value = int(meta.get("input", {}).get("letterbox", {}).get("pad_value", 114))
        self.names = {int(k): str(v) for k, v in meta.get("names", {}).items()}
        nms_meta = meta.get("output", {}).get("nms")
        nms_meta = nms_meta if isinstance(nms_meta, dict) else {}
        self.conf = float(nms_meta.get("conf", 0.25) if conf is None else conf)
        self.iou = float(nms_meta.get("iou", 0.7) if iou is None else iou)
        self.max_det = int(nms_meta.get("max_det", 300) if max_det is None else max_det)

    @classmethod
    def from_bundle(cls, path: str | Path, runtime: str | None = None, threads: int | None = None,
                    verify: bool = True, conf: float | None = None, iou: float | None = None,
                    max_det: int | None = None, **backend_options) -> Detector:
        """Open a dist/<target>/ folder; `runtime` overrides metadata's (e.g. onnxruntime for a TensorRT bundle).

        backend_options go to the backend: compute_units for coreml, providers for onnxruntime.
        """
        bundle = Path(path)
        meta = load_metadata(bundle)
        sha = verify_model(bundle, meta) if verify else None
        backend = open_backend(runtime or meta.get("runtime", ""), bundle, meta, threads, **backend_options)
        return cls(backend, meta, sha, conf, iou, max_det)

    @property
    def runtime(self) -> str:
        return self.backend.name

    @property
    def runtime_version(self) -> str | None:
        return package_version(self.backend.package)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        canvas, box = letterbox(image, self.imgsz, self.pad_value)
        x = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
        x /= 255.0
        return x, box

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.backend.run(x)

    def postprocess(self, raw: np.ndarray, box: Letterbox, size: tuple[int, int]) -> list[Detection]:
        """Decode the raw output of one image of `size` (width, height) into detections on that image."""
        boxes, scores, classes = decode(raw[0], self.end2end, self.conf, self.iou, self.max_det,
                                        self.imgsz if self.normalized else 1)
        boxes = box.to_original(boxes, *size)
        return [Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), int(c),
                          self.names.get(int(c), str(int(c))))
                for b, s, c in zip(boxes, scores, classes)]

    def __call__(self, image: np.ndarray) -> list[Detection]:
        x, box = self.preprocess(image)
        return self.postprocess(self.infer(x), box, (image.shape[1], image.shape[0]))
