"""RTSP camera capacity: how many concurrent 640x360 30 fps cameras this machine
processes with no growing lag, at full rate and with a processing fps cap.

    python benchmarks/rtsp_capacity.py [--seconds 10] [--full 4,5,6,8] \\
        [--capped 12,14,16,20] [--cap 10] [--json out.json]

Set-up, all on 127.0.0.1: Debian's rtsp-server-perl with one mount per camera, each
fed by its own ``ffmpeg -re -stream_loop -1 -c copy -an`` publishing the test clip
(H.264 640x360 29.97 fps), so N cameras are N independent RTSP sessions whose frames
arrive at their own phase, as real cameras' do. The service is ``stream-server
serve`` in its own process (free port) with Lin-Manuel Miranda and the people of the
media enrolled; cameras are added through ``POST /streams`` exactly as a user would
(UDP, the only transport this RTSP server offers), events are read from
``/ws/events``.

For each step (N cameras, full rate or capped) the cameras are added, run until all
are live plus a warm-up, then measured for ``--seconds``:

- processed fps per camera (frames through detection, from ``GET /streams``
  counters over the window) against what it should be (the input rate, or the cap);
- frames dropped because the pipeline was busy (newest frame wins);
- input lag: how much later than at its best each camera's frames arrive (decode
  keeping up with the network), at the start and end of the window;
- frame-to-event latency (each event's ``latency_ms``: frame arrival to emission)
  p50/p95 over every event of the window, and for ``face.matched`` alone;
- CPU of the service process (cores, and per camera), its RSS over the idle server
  (memory per camera), and the CPU of the RTSP server + publishers (the cameras'
  side, which a deployment does not pay but which shares this machine's 2 cores).

A step passes when every camera is processed at >= 95 % of its expected rate, busy
drops stay under 5 % of the frames, the input lag does not grow by more than 100 ms
over the window, and the event latency p95 is under 250 ms. Ratios are against the
one-camera full-rate step of the same run (the baseline). Bounded: each step lasts
about ``seconds + 8`` s; a ladder stops after its first failing step.

The machine may be shared: its speed is calibrated at the start and the end of the
run (single-threaded CPU ms to decode a frame and to detect faces in it, outside the
service), the CPU other processes took is reported per step, and a step that failed
while other processes took more than a quarter of a core is measured once more.

Needs FACE_MODEL_DIR and FACE_TEST_MEDIA (default: ../shared/{models,media}),
ffmpeg and rtsp-server-perl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.rtsp_support import RtspCamera, free_port  # noqa: E402

CLIP = "short_hamilton_clip.mp4"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its finished children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine spent busy (all cores, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * PAGE / 1e6


def scrape(api: httpx.Client) -> dict[str, float]:
    """The few Prometheus series the report explains its figures with."""
    wanted = {
        "face_embeddings_total": "embeddings",
        "face_embed_refused_total": "embed_refused",
        'face_stage_duration_seconds_sum{stage="detect"}': "detect_s",
        'face_stage_duration_seconds_count{stage="detect"}': "detect_n",
        'face_stage_duration_seconds_sum{stage="embed_batch"}': "embed_s",
        'face_stage_duration_seconds_count{stage="embed_batch"}': "embed_batches",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in api.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def calibrate(media: Path, models: Path, frames: int = 90) -> dict[str, float]:
    """This machine's speed right now: CPU ms to decode a frame of the clip and to run
    the full-range detector on it, single-threaded, outside the service. The machine
    is shared (its cores slow down when neighbours work), so it is measured at the
    start and the end of the run and every step can be read against it."""
    import resource

    import av

    from stream_server.pipeline.detect import FaceDetector

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    images = []
    t0 = cpu()
    with av.open(str(media / CLIP)) as container:
        video = container.streams.video[0]
        video.codec_context.thread_count = 1
        for frame in container.decode(video):
            images.append(frame.to_ndarray(format="rgb24"))
            if len(images) >= frames:
                break
    decode_ms = (cpu() - t0) / len(images) * 1000
    detector = FaceDetector(models / "face_detection_full_range_sparse.tflite")
    try:
        for image in images[:10]:
            detector.detect(image)
        t0 = cpu()
        for image in images:
            detector.detect(image)
        detect_ms = (cpu() - t0) / len(images) * 1000
    finally:
        detector.close()
    return {"decode_rgb_ms": round(decode_ms, 2), "detect_ms": round(detect_ms, 2)}


class EventTap:
    """Collects (kind, latency_ms) of every event from /ws/events in a thread."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, open_timeout=10, max_size=None).__enter__()
        self.ws.recv(timeout=10)  # "subscribed"
        self.events: list[tuple[float, str, str, float | None]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                e = json.loads(message)
                self.events.append(
                    (time.monotonic(), e.get("type"), e.get("stream_id"), e.get("latency_ms"))
                )
        except Exception:
            return

    def window(self, t0: float, t1: float) -> list[tuple[str, str, float | None]]:
        return [(k, s, lat) for t, k, s, lat in list(self.events) if t0 <= t <= t1]

    def close(self) -> None:
        self.ws.close()


@dataclass
class Step:
    label: str
    cameras: int
    fps_cap: float | None
    seconds: float
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    expected_fps: float = 0.0
    processed_fps_min: float = 0.0
    processed_fps_mean: float = 0.0
    input_fps_mean: float = 0.0
    busy_drop_pct: float = 0.0
    lag_growth_ms_max: float = 0.0
    events: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    matched_p95_ms: float | None = None
    matched_events: int = 0
    service_cpu_cores: float = 0.0
    service_cpu_per_camera: float = 0.0
    camera_side_cpu_cores: float = 0.0
    other_processes_cpu_cores: float = 0.0
    embeddings_per_s: float = 0.0
    embeds_refused_per_s: float = 0.0
    embed_ms_per_face: float | None = None
    detect_ms: float | None = None
    rss_mb: float = 0.0
    rss_per_camera_mb: float = 0.0
    live_after_s: float = 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        media = Path(os.environ.get("FACE_TEST_MEDIA", REPO.parent / "shared" / "media"))
        models = Path(os.environ.get("FACE_MODEL_DIR", REPO.parent / "shared" / "models"))
        self.media, self.models = media.resolve(), models.resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix="rtsp-capacity-"))
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "FACE_MODEL_DIR": str(self.models),
            "FACE_DATA_DIR": str(self.tmp / "data"),
            "FACE_ALLOW_DOWNLOAD": "false",
            "FACE_LOG_LEVEL": "WARNING",
        }
        self.rtsp: RtspCamera | None = None
        self.server: subprocess.Popen | None = None
        self.port = free_port()
        self.idle_rss = 0.0

    # -- set-up ------------------------------------------------------------------------
    def enroll(self) -> None:
        cmd = [sys.executable, "-m", "stream_server.cli", "enroll", "--dir"]
        people = self.tmp / "people"
        people.mkdir()
        for sub in (self.media / "people").iterdir():
            (people / sub.name).symlink_to(sub)
        lmm = people / "lin_manuel_miranda"
        lmm.mkdir()
        (lmm / "lin-manuel-miranda.png").symlink_to(self.media / "lin-manuel-miranda.png")
        subprocess.run(
            [*cmd, str(people)],
            env=self.env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_cameras(self, count: int) -> None:
        self.rtsp = RtspCamera(self.media / CLIP, self.tmp, path="cam0", audio=False)
        self.rtsp.start_server()
        for i in range(count):
            self.rtsp.start_publisher(path=f"cam{i}")

    def start_server(self) -> None:
        log = open(self.tmp / "server.log", "wb")  # noqa: SIM115
        self.server = subprocess.Popen(
            [sys.executable, "-m", "stream_server.cli", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.server.poll() is not None:
                raise RuntimeError(f"server exited; see {self.tmp / 'server.log'}")
            time.sleep(0.2)
        else:
            raise RuntimeError("server not ready in time")
        time.sleep(2.0)
        self.idle_rss = proc_rss_mb(self.server.pid)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(20)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.rtsp is not None:
            self.rtsp.kill()

    # -- one step ------------------------------------------------------------------------
    def run_step(self, api: httpx.Client, tap: EventTap, n: int, cap: float | None) -> Step:
        label = f"{n} camera(s) " + (f"capped at {cap:g} fps" if cap else "at full rate")
        step = Step(label, n, cap, self.args.seconds)
        ids = [f"bench-{n}-{int(cap or 0)}-{i}" for i in range(n)]
        t_add = time.monotonic()
        for i, sid in enumerate(ids):
            body = {"url": f"rtsp://127.0.0.1:{self.rtsp.client_port}/cam{i}", "id": sid}
            if cap:
                body["fps_cap"] = cap
            r = api.post("/streams", json=body)
            r.raise_for_status()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = [s["state"] for s in api.get("/streams").json()["streams"]]
                if states.count("live") == n:
                    break
                time.sleep(0.2)
            else:
                step.reasons.append(f"not all live after 30 s: {states}")
                return step
            step.live_after_s = round(time.monotonic() - t_add, 2)
            time.sleep(self.args.warmup)

            pids = self.rtsp.pids()
            before = {s["id"]: s for s in api.get("/streams").json()["streams"]}
            m0 = scrape(api)
            cpu0, cam_cpu0, t0 = proc_cpu_s(self.server.pid), _sum_cpu(pids), time.monotonic()
            busy0 = machine_busy_s()
            rss_samples = []
            while time.monotonic() - t0 < self.args.seconds:
                time.sleep(0.5)
                rss_samples.append(proc_rss_mb(self.server.pid))
            t1 = time.monotonic()
            cpu1, cam_cpu1 = proc_cpu_s(self.server.pid), _sum_cpu(pids)
            busy1 = machine_busy_s()
            after = {s["id"]: s for s in api.get("/streams").json()["streams"]}
            m1 = scrape(api)
            window = t1 - t0

            processed, inputs, lag_growth = [], [], []
            decoded_total = busy_total = 0
            for sid in ids:
                b, a = before[sid], after[sid]
                processed.append((a["frames_processed"] - b["frames_processed"]) / window)
                decoded = a["frames_decoded"] - b["frames_decoded"]
                inputs.append(decoded / window)
                decoded_total += decoded
                busy_total += a["frames_dropped_busy"] - b["frames_dropped_busy"]
                lag_growth.append((a["input_lag_ms"] or 0.0) - (b["input_lag_ms"] or 0.0))
                if a["state"] != "live":
                    step.reasons.append(f"{sid} {a['state']}: {a['last_error']}")
            input_fps = statistics.mean(inputs)
            step.input_fps_mean = round(input_fps, 2)
            step.expected_fps = round(min(cap, input_fps) if cap else input_fps, 2)
            step.processed_fps_min = round(min(processed), 2)
            step.processed_fps_mean = round(statistics.mean(processed), 2)
            step.busy_drop_pct = round(100.0 * busy_total / max(1, decoded_total), 2)
            step.lag_growth_ms_max = round(max(lag_growth), 1)
            events = [e for e in tap.window(t0, t1) if e[1] in ids]
            lats = [lat for _, _, lat in events if lat is not None]
            matched = [lat for k, _, lat in events if k == "face.matched" and lat is not None]
            step.events = len(lats)
            step.matched_events = len(matched)
            step.latency_p50_ms = _round(percentile(lats, 0.5))
            step.latency_p95_ms = _round(percentile(lats, 0.95))
            step.matched_p95_ms = _round(percentile(matched, 0.95))
            step.service_cpu_cores = round((cpu1 - cpu0) / window, 2)
            step.service_cpu_per_camera = round(step.service_cpu_cores / n, 3)
            step.camera_side_cpu_cores = round((cam_cpu1 - cam_cpu0) / window, 2)
            # CPU taken by everything else on the machine (other users' jobs share it)
            other = (busy1 - busy0) - (cpu1 - cpu0) - (cam_cpu1 - cam_cpu0)
            step.other_processes_cpu_cores = round(max(0.0, other / window), 2)
            d = {k: m1[k] - m0[k] for k in m0}
            step.embeddings_per_s = round(d["embeddings"] / window, 1)
            step.embeds_refused_per_s = round(d["embed_refused"] / window, 1)
            if d["embeddings"]:
                step.embed_ms_per_face = round(1000 * d["embed_s"] / d["embeddings"], 1)
            if d["detect_n"]:
                step.detect_ms = round(1000 * d["detect_s"] / d["detect_n"], 2)
            step.rss_mb = round(max(rss_samples), 1)
            step.rss_per_camera_mb = round((step.rss_mb - self.idle_rss) / n, 1)

            if step.processed_fps_min < 0.95 * step.expected_fps:
                step.reasons.append(
                    f"processed {step.processed_fps_min} fps < 95 % of {step.expected_fps}"
                )
            if step.busy_drop_pct > 5.0:
                step.reasons.append(f"{step.busy_drop_pct} % of frames dropped (busy)")
            if step.lag_growth_ms_max > 100.0:
                step.reasons.append(f"input lag grew by {step.lag_growth_ms_max} ms")
            if step.latency_p95_ms is None:
                step.reasons.append("no events in the window")
            elif step.latency_p95_ms >= 250.0:
                step.reasons.append(f"event latency p95 {step.latency_p95_ms} ms >= 250 ms")
            step.passed = not step.reasons
            return step
        finally:
            for sid in ids:
                api.delete(f"/streams/{sid}")
            time.sleep(2.0)

    def run(self) -> dict:
        full = [int(x) for x in self.args.full.split(",") if x]
        capped = [int(x) for x in self.args.capped.split(",") if x]
        need = max(full + capped + [1])
        speed0 = calibrate(self.media, self.models)
        print(f"machine speed at start (single thread, CPU ms/frame): {speed0}", flush=True)
        print(f"setting up: enrolment, RTSP server with {need} mounts, service ...", flush=True)
        self.enroll()
        self.start_cameras(need)
        self.start_server()
        results: dict = {
            "machine": {"cpus": os.cpu_count(), "clip": CLIP, "speed_at_start": speed0},
            "idle_service_rss_mb": round(self.idle_rss, 1),
            "steps": [],
        }
        with httpx.Client(base_url=self.base, timeout=30) as api:
            tap = EventTap(f"ws://127.0.0.1:{self.port}/ws/events")
            try:
                baseline = self.run_step(api, tap, 1, None)
                self._report(baseline, None)
                results["baseline"] = asdict(baseline)
                for ladder, cap in ((full, None), (capped, self.args.cap)):
                    for n in ladder:
                        if n == 1 and cap is None:
                            continue
                        step = self.run_step(api, tap, n, cap)
                        self._report(step, baseline)
                        if not step.passed and step.other_processes_cpu_cores > 0.25:
                            # this machine is shared: a step that failed while other jobs
                            # took CPU is measured once more
                            print("     (other processes were busy: measuring again)")
                            step = self.run_step(api, tap, n, cap)
                            step.label += " (second try)"
                            self._report(step, baseline)
                        results["steps"].append(asdict(step))
                        if not step.passed:
                            break
            finally:
                tap.close()
        results["machine"]["speed_at_end"] = calibrate(self.media, self.models)
        print(f"machine speed at end: {results['machine']['speed_at_end']}", flush=True)
        for key, cap in (("max_cameras_full_rate", None), ("max_cameras_capped", self.args.cap)):
            ok = [s["cameras"] for s in results["steps"] if s["fps_cap"] == cap and s["passed"]]
            if cap is None and results["baseline"]["passed"]:
                ok.append(1)
            results[key] = max(ok) if ok else 0
        results["cap_fps"] = self.args.cap
        # What the CPU alone allows: cameras whose measured cost fits in 90 % of the
        # machine (an estimate from passing steps, not a measurement).
        cpus = os.cpu_count() or 1
        for key, cap in (("cpu_bound_estimate_full", None), ("cpu_bound_estimate_capped", 1)):
            costs = [
                s["service_cpu_per_camera"]
                for s in results["steps"]
                if s["passed"] and (s["fps_cap"] is None) == (cap is None)
            ]
            results[key] = int(0.9 * cpus / max(costs)) if costs else None
        return results

    @staticmethod
    def _report(step: Step, baseline: Step | None) -> None:
        verdict = "PASS" if step.passed else "FAIL"
        ratio = ""
        if baseline is not None and baseline.latency_p95_ms and step.latency_p95_ms:
            lat_x = step.latency_p95_ms / baseline.latency_p95_ms
            cpu_x = step.service_cpu_per_camera / max(baseline.service_cpu_per_camera, 1e-9)
            ratio = f"  [vs 1-camera baseline: latency p95 x{lat_x:.2f}, CPU/camera x{cpu_x:.2f}]"
        print(
            f"{verdict} {step.label}: processed {step.processed_fps_mean} fps/camera "
            f"(min {step.processed_fps_min}, expected {step.expected_fps}, input "
            f"{step.input_fps_mean}), busy drops {step.busy_drop_pct} %, lag growth "
            f"{step.lag_growth_ms_max} ms, events {step.events} latency p50/p95 "
            f"{step.latency_p50_ms}/{step.latency_p95_ms} ms (face.matched p95 "
            f"{step.matched_p95_ms} ms, n={step.matched_events}), service CPU "
            f"{step.service_cpu_cores} cores ({step.service_cpu_per_camera}/camera), cameras' "
            f"side {step.camera_side_cpu_cores} cores, other processes "
            f"{step.other_processes_cpu_cores} cores, RSS {step.rss_mb} MB "
            f"({step.rss_per_camera_mb} MB/camera), detect {step.detect_ms} ms/frame, "
            f"{step.embeddings_per_s} embeddings/s ({step.embed_ms_per_face} ms each, "
            f"{step.embeds_refused_per_s}/s refused: pool full){ratio}",
            flush=True,
        )
        for reason in step.reasons:
            print(f"     - {reason}", flush=True)


def _sum_cpu(pids: list[int]) -> float:
    return sum(proc_cpu_s(p) for p in pids)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per step")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after all are live")
    p.add_argument("--full", default="4,5,6,8", help="camera counts at full rate")
    p.add_argument("--capped", default="12,14,16,20", help="camera counts with the fps cap")
    p.add_argument("--cap", type=float, default=10.0, help="processing fps cap")
    p.add_argument("--json", default=None, help="write the results to this file")
    args = p.parse_args()
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    print(
        f"CPU-bound estimate from the measured cost per camera (90 % of the machine): "
        f"{results['cpu_bound_estimate_full']} at full rate, "
        f"{results['cpu_bound_estimate_capped']} capped"
    )
    print(
        f"\nmax cameras with no growing lag on {results['machine']['cpus']} CPUs: "
        f"{results['max_cameras_full_rate']} at full rate (target >= 6), "
        f"{results['max_cameras_capped']} at a {args.cap:g} fps cap (target >= 16)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
