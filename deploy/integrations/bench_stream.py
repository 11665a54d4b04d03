"""End-to-end benchmark of both integration loops on a video file, in-process (for `make bench`).

The file is replayed at its own FPS and looped, as a camera would deliver it, so the numbers include
capture, colour conversion, buffering and the detector: what an application on the device sees.

    python3 bench_stream.py --bundle dist/rpi --video clip.avi --seconds 10
"""

from __future__ import annotations

import argparse
import gc
import os
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import automotive  # noqa: E402
import drone  # noqa: E402
import streaming as st  # noqa: E402

KEYS = ("fps", "latency_ms", "frames_read", "frames_dropped", "corrupt_frames")


def run(bundle_dir: str | Path, video_path: str | Path, seconds: float, rate: float = 30.0,
        threads: int | None = None) -> dict:
    """Run the drone loop, then the automotive loop at `rate` Hz, for `seconds` each; their FPS and latency."""
    if not Path(video_path).is_file():  # a missing file would otherwise be retried like a dropped stream
        raise st.Exit(f"video {video_path} not found", st.EXIT_ERROR)
    detectors = st.open_detectors(Path(bundle_dir), threads, fallbacks=True)
    video = str(video_path)
    flown = drone.run(detectors[0], st.LatestFrameCapture(video, realtime=True, loop=True).start(), [],
                      duration=seconds, heartbeat=0)
    driven = automotive.run(detectors, st.LatestFrameCapture(video, realtime=True, loop=True).start(), [],
                            rate=rate, deadline_ms=1000 / rate, watchdog=automotive.Watchdog(len(detectors)),
                            max_ticks=max(1, round(seconds * rate)))
    result = {"bundle": str(bundle_dir), "video": video, "seconds": seconds, "runtime": detectors[0].runtime,
            "drone": {**{k: flown[k] for k in KEYS}, "frames_processed": flown["frames_processed"]},
            "automotive": {**{k: driven[k] for k in KEYS}, "rate_hz": rate, "processed": driven["processed"],
                           "deadline_misses": driven["deadline_misses"], "miss_ratio": driven["miss_ratio"],
                           "mode": driven["mode"]}}
    del detectors  # release the interpreters here, not during interpreter shutdown (LiteRT aborts there)
    gc.collect()
    return result


@st.cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--seconds", type=st.positive_float, default=10.0, help="per loop (default 10)")
    p.add_argument("--rate", type=st.positive_float, default=30.0, help="automotive tick rate (default 30)")
    p.add_argument("--threads", type=st.positive_int)
    args = p.parse_args(argv)
    print(json.dumps(run(args.bundle, args.video, args.seconds, args.rate, args.threads), indent=2), flush=True)
    # The looped captures leave an OpenCV read thread behind; tearing it down at interpreter exit aborts
    # the process once LiteRT is loaded, so leave without teardown once the result is written.
    os._exit(st.EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
