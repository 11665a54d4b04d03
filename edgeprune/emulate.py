"""`edgeprune emulate`: run a bundle's own validation script on an emulated aarch64 CPU and check it
computes what the host computes (deploy/emulate/README.md explains the set-up and its pitfalls).

Emulation answers "will this bundle give the same answers on the device's CPU?", not "how fast is
it": qemu is 30-300x slower than the device, so no timing from here is ever reported as latency.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.paths import PROJECT_ROOT, WORK_ROOT
from edgeprune.errors import EdgepruneError
from edgeprune.manifest import atomic_write_json
from edgeprune.targets import Target

CACHE = WORK_ROOT / ".cache" / "emulate"
REQUIREMENTS = PROJECT_ROOT / "deploy" / "emulate" / "requirements-aarch64.txt"
SUITE = "bookworm"  # Raspberry Pi OS 12 is bookworm; its python3.11 matches the wheels' cp311 tag
DEBIAN_PACKAGES = ("python3.11", "libpython3.11-stdlib", "libstdc++6", "libgomp1", "ca-certificates")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")  # pip --target does not expand tags: every one must be listed
HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static", "mmdebstrap": "mmdebstrap", "unshare": "util-linux"}
MATCH_IOU = 0.9  # pre-post policy: a detection agrees when class matches and boxes overlap this much
MIN_AGREEMENT = 0.8  # pre-post policy: fraction of host detections the emulated run must reproduce
FLOAT_ATOL = 1e-5  # bit-exact policy, float tail: raw outputs (boxes / imgsz, scores) may differ by float rounding
DETECTION_ATOL = 1e-3  # ... and detections by this many pixels
CPU_LIST = "0-3"  # what the private /sys tells LiteRT: a 4-core Pi / Orin cluster


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def require_host_tools() -> None:
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        packages = " ".join(sorted({HOST_TOOLS[t] for t in missing}))
        raise EdgepruneError(f"emulation needs {', '.join(missing)}, not found on this machine",
                             f"install them: apt-get install {packages} (Debian/Ubuntu)")


def _sysroot_key() -> str:
    text = "\n".join([SUITE, *DEBIAN_PACKAGES, *WHEEL_PLATFORMS, REQUIREMENTS.read_text()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_sysroot(cache: Path = CACHE) -> Path:
    """The cached aarch64 sysroot with Python and the device wheels; built on first use (~30 s)."""
    final = cache / f"{SUITE}-arm64-{_sysroot_key()}"
    if (final / ".complete").exists():
        return final
    require_host_tools()
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=cache, prefix=".building-"))
    try:
        print(f"emulate: building aarch64 sysroot {final.name} (Debian {SUITE} + {REQUIREMENTS.name}) ...")
        _run(["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
              f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(building / "root")], "mmdebstrap")
        site = building / "root" / "opt" / "edgeprune-site"
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-conflicts", "--disable-pip-version-check",
              "--target", str(site), "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
              *platforms, "-r", str(REQUIREMENTS)], "pip install of the aarch64 wheels")
        (building / "root" / ".complete").write_text(json.dumps({"suite": SUITE, "packages": DEBIAN_PACKAGES,
                                                                  "requirements": REQUIREMENTS.read_text()}))
        shutil.rmtree(final, ignore_errors=True)
        (building / "root").rename(final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise EdgepruneError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}",
                             "check that the Debian and PyPI mirrors are reachable, then re-run")


def emulated_command(sysroot: Path, qemu_cpu: str, argv: list[str]) -> list[str]:
    """argv (a python script and its args) wrapped to run under qemu in a private mount namespace.

    The namespace gets a tmpfs /sys with only the CPU lists: ai-edge-litert crashes on the host's
    /sys under qemu and fails without one. qemu -L looks paths up in the sysroot first, then on the
    host, so the bundle and output files are read and written at their host paths.
    """
    cpu_dir = "/sys/devices/system/cpu"
    script = " && ".join([
        "mount -t tmpfs edgeprune-sys /sys", f"mkdir -p {cpu_dir}",
        *(f"echo {CPU_LIST} > {cpu_dir}/{name}" for name in ("possible", "present", "online")),
        f'exec env QEMU_CPU={qemu_cpu} PYTHONPATH=/opt/edgeprune-site PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 '
        f'qemu-aarch64-static -L "{sysroot}" "{sysroot}/usr/bin/python3.11" "$@"'])
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace.insert(1, "--map-root-user")
    return [*namespace, "sh", "-c", script, "edgeprune-emulate", *argv]


def _script_args(bundle: Path, script: str, images: list[Path], dump: Path, out: Path) -> list[str]:
    return [str(bundle / script), "--bundle", str(bundle), "--dry-run", "--threads", "2",
            "--image", *map(str, images), "--dump-outputs", str(dump), "--out", str(out)]


def matched_fraction(host: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """(host detections reproduced by `other` with the same class and IoU >= MATCH_IOU, host detections)."""
    if len(host) == 0:
        return 0, 0
    if len(other) == 0:
        return 0, len(host)
    from edgeprune.evaluation.detection import same_class_iou  # torch-heavy module: only when detections exist

    return int((same_class_iou(host, other).max(1) >= MATCH_IOU).sum()), len(host)


def compare(host: dict[str, np.ndarray], emulated: dict[str, np.ndarray], policy: str,
            integer_graph: bool = True, mixed: bool = False) -> list[Check]:
    """Checks of the emulated dump against the host's, under the profile's policy (bit-exact | pre-post).

    bit-exact with `integer_graph`: the raw output comes out of integer kernels and must match bit for bit.
    When the graph ends in float ops (the accuracy guard kept decoding in float, or an FP32 model), those
    kernels legitimately differ by float rounding between x86 and ARM (sigmoid/softmax approximations,
    FMA): the raw output must then agree to FLOAT_ATOL and the detections to DETECTION_ATOL pixels.
    A `mixed` graph (the guard's sensitivity search floated whole blocks between INT8 ones) re-quantizes
    float results, so one float rounding can move an INT8 value by a step: no bit-exact claim is possible,
    and it is checked like pre-post (detections must agree), labelled as such.
    """
    images = sorted({key.split("/")[0] for key in host}, key=int)
    if not images:
        return [Check("images", False, "the host dump holds no images")]

    def identical(kind: str, other_kind: str | None = None) -> Check:
        bad = [i for i in images if f"{i}/{other_kind or kind}" not in emulated
               or not np.array_equal(host[f"{i}/{kind}"], emulated[f"{i}/{other_kind or kind}"])]
        label = f"{other_kind} == host {kind}" if other_kind else f"{kind} bit-exact"
        return Check(label, not bad, f"{len(images) - len(bad)}/{len(images)} images identical"
                     + (f"; differ: images {bad}" if bad else ""))

    checks = [identical("input"), identical("detections", "detections_from_reference")]
    if policy == "bit-exact" and integer_graph:
        return checks + [identical("raw"), identical("detections")]
    if policy == "bit-exact" and not mixed:
        return checks + [_float_tail_raw(host, emulated, images), _float_tail_detections(host, emulated, images)]
    raw_diff = max(float(np.abs(host[f"{i}/raw"] - emulated[f"{i}/raw"]).max()) for i in images)
    matched, total = (sum(x) for x in zip(*(matched_fraction(host[f"{i}/detections"], emulated[f"{i}/detections"])
                                            for i in images)))
    agreement = matched / total if total else 1.0
    why = ("float blocks between INT8 ones: a float rounding can move an INT8 value by one step, so bit-exact "
           "is not claimed" if mixed else "ONNX Runtime's INT8 kernels differ between x86 and aarch64")
    return checks + [
        Check("raw output agreement (reported)", True, f"max |host - emulated| = {raw_diff:.4g} ({why})"),
        Check(f"detections agree (class, IoU >= {MATCH_IOU})", agreement >= MIN_AGREEMENT,
              f"{matched}/{total} host detections reproduced ({agreement:.0%}, need {MIN_AGREEMENT:.0%})")]


def _float_tail_raw(host: dict, emulated: dict, images: list[str]) -> Check:
    diffs = [np.abs(host[f"{i}/raw"].astype(np.float64) - emulated[f"{i}/raw"]) for i in images]
    worst = max(float(d.max()) for d in diffs)
    exact = float(np.mean([(d == 0).mean() for d in diffs]))
    return Check(f"raw within {FLOAT_ATOL:g} (float decode tail)", worst <= FLOAT_ATOL,
                 f"max |host - emulated| = {worst:.3g}, {exact:.0%} of values bit-identical")


def _float_tail_detections(host: dict, emulated: dict, images: list[str]) -> Check:
    bad = [i for i in images if host[f"{i}/detections"].shape != emulated[f"{i}/detections"].shape
           or np.abs(host[f"{i}/detections"] - emulated[f"{i}/detections"]).max(initial=0) > DETECTION_ATOL]
    return Check(f"detections equal within {DETECTION_ATOL:g} px", not bad,
                 f"{len(images) - len(bad)}/{len(images)} images" + (f"; differ: images {bad}" if bad else ""))


def emulation_script(runtime: str) -> str | None:
    """The bundle script that runs under qemu for this runtime, as its format declares (None: not emulated)."""
    from edgeprune import formats

    try:
        return formats.for_runtime(runtime).caps.emulation_script
    except EdgepruneError:
        return None


def float_units(meta: dict) -> list[str]:
    """Blocks the INT8 guard's sensitivity search kept in float, mid-graph (empty: none)."""
    return list(((meta.get("quantization") or {}).get("accuracy_guard") or {}).get("float_units") or [])


def integer_graph(meta: dict) -> bool:
    """True when the bundle's model is integer end to end: INT8 with the accuracy guard's level 'none'."""
    guard = (meta.get("quantization") or {}).get("accuracy_guard") or {}
    return meta.get("precision") == "int8" and guard.get("chosen") == "none"


def emulate(bundle: Path, target: Target, images: list[Path], out_dir: Path, qemu_cpu: str | None = None) -> dict:
    """Run the bundle's validation script on the host and under qemu, compare, write out_dir/report.json."""
    bundle = Path(bundle).resolve()
    meta_path = bundle / "metadata.json"
    if not meta_path.exists():
        raise EdgepruneError(f"no bundle at {bundle} (metadata.json missing)",
                             f"build it first: make deploy TARGET={target.name}")
    meta = json.loads(meta_path.read_text())
    emulation = target.emulation
    if not emulation.qemu_cpu:
        raise EdgepruneError(f"target {target.name} has no emulated CPU ({target.device.hardware.cpu or 'not an ARM CPU'})",
                             "emulation covers the ARM targets: rpi, rpi4, jetson, jetson-agx-orin")
    runtime = meta.get("runtime", "")
    script = emulation_script(runtime)
    if script is None or not (bundle / script).exists():
        raise EdgepruneError(f"bundle {bundle} (runtime {runtime!r}) has no script that runs under emulation",
                             "emulation runs the validate script of tflite and onnx bundles")
    if not images:
        raise EdgepruneError("no images to compare on", "pass --images or build the dataset (make data)")
    cpu = qemu_cpu or emulation.qemu_cpu
    sysroot = ensure_sysroot()
    require_host_tools()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    host_dump, emu_dump = out_dir / "host.npz", out_dir / "emulated.npz"
    host_run = subprocess.run([sys.executable, *_script_args(bundle, script, images, host_dump,
                                                                out_dir / "host-results.json")],
                              capture_output=True, text=True)
    if host_run.returncode != 0:
        raise EdgepruneError(f"the bundle's {script} failed on the host: {host_run.stderr.strip()[-800:]}",
                             "run it by hand with --dry-run to see why")
    argv = _script_args(bundle, script, images, emu_dump, out_dir / "emulated-results.json")
    print(f"emulate: {target.name} bundle under qemu-aarch64 (QEMU_CPU={cpu}), {len(images)} images ...")
    floated = float_units(meta)
    emu_run = subprocess.run(emulated_command(sysroot, cpu, [*argv, "--postprocess-from", str(host_dump)]),
                             capture_output=True, text=True)
    if emu_run.returncode != 0:
        checks = [Check("emulated run", False, f"exit {emu_run.returncode}: {emu_run.stderr.strip()[-800:]}")]
    else:
        with np.load(host_dump) as h, np.load(emu_dump) as e:
            checks = compare(dict(h), dict(e), emulation.outputs, integer_graph(meta), mixed=bool(floated))
    emulated = _emulated_device(out_dir / "emulated-results.json")
    report = {"target": target.name, "bundle": str(bundle), "model": meta.get("model"),
              "model_sha256": meta.get("files", {}).get(meta.get("model", ""), None), "runtime": runtime,
              "script": script, "qemu_cpu": cpu, "policy": emulation.outputs, "integer_graph": integer_graph(meta),
              "float_units": floated,
              "images": [str(p) for p in images],
              "sysroot": sysroot.name, "emulated_device": emulated,
              "checks": [{"name": c.name, "pass": c.passed, "detail": c.detail} for c in checks],
              "pass": all(c.passed for c in checks),
              "timings": "not reported: qemu runs 30-300x slower than the device; measure latency on the device"}
    atomic_write_json(out_dir / "report.json", report)
    (out_dir / "emulated-results.json").unlink(missing_ok=True)  # its timings must not pass for device latency
    return report


def _emulated_device(results: Path) -> dict:
    """Which machine and runtime the emulated run reported (no timings)."""
    if not results.exists():
        return {}
    data = json.loads(results.read_text())
    return {"machine": data.get("device", {}).get("machine"), "runtime": data.get("runtime"),
            "runtime_version": data.get("runtime_version"), "detections": data.get("detections")}


def summary(report: dict) -> str:
    lines = [f"{'PASS' if c['pass'] else 'FAIL'}  {c['name']}: {c['detail']}" for c in report["checks"]]
    verdict = "PASS" if report["pass"] else "FAIL"
    policy = report["policy"] + (f" requested; float blocks {', '.join(report['float_units'])} between INT8 ones: "
                                 "checked as agreement" if report.get("float_units") else "")
    return "\n".join([*lines, f"{verdict} {report['target']}: {report['script']} under qemu-aarch64 "
                      f"(QEMU_CPU={report['qemu_cpu']}, {policy}) vs host"])
