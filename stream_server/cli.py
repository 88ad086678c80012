"""Command line: serve | replay | enroll | models | gallery | bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from .config import Settings
from .logs import configure_logging

log = logging.getLogger("stream_server")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def _service(settings: Settings):
    from .service import FaceService

    return FaceService(settings)


# -- models -------------------------------------------------------------------
def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from .models import ModelNotFoundError, resolve_detector, resolve_embedder

    ok = True
    rows = []
    for role, fn in (
        ("detector short", lambda: resolve_detector(settings, "short")),
        ("detector full", lambda: resolve_detector(settings, "full")),
        ("embedder", lambda: resolve_embedder(settings)),
    ):
        try:
            m = fn()
            rows.append(
                {
                    "role": role,
                    "path": str(m.path),
                    "source": m.source,
                    "sha256": m.sha256,
                    "model_id": m.model_id,
                }
            )
        except ModelNotFoundError as exc:
            ok = False
            rows.append({"role": role, "error": str(exc)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if "error" in r:
                print(f"{r['role']:15s} MISSING  {r['error']}")
            else:
                print(f"{r['role']:15s} {r['source']:10s} {r['path']}  sha256={r['sha256'][:16]}…")
    return 0 if ok else 1


# -- enroll -------------------------------------------------------------------
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def enroll_images(service, name: str, images: list[Path]) -> tuple[str, int, list[str]]:
    """Enrol the largest face of each image under ``name``; all-or-nothing per person."""
    from .service import read_image_file

    faces = []
    problems: list[str] = []
    for path in images:
        try:
            img = read_image_file(path)
        except Exception as exc:
            problems.append(f"{path}: {exc}")
            continue
        found = service.analyse_still(img)
        if not found:
            problems.append(f"{path}: no face found")
            continue
        if len(found) > 1:
            log.warning("%s: %d faces, enrolling the largest", path, len(found))
        faces.append(service.new_face(found[0], source=path.name))
    if problems:
        return "", 0, problems
    ident = service.store.find_by_name(name) or service.store.create_identity(name)
    service.store.add_faces(ident.id, faces)
    return ident.id, len(faces), []


def cmd_enroll(args: argparse.Namespace, settings: Settings) -> int:
    plan: list[tuple[str, list[Path]]] = []
    if args.dir:
        root = Path(args.dir)
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            plan.append(
                (
                    sub.name.replace("_", " ").title() if args.title_case else sub.name,
                    _images_in(sub),
                )
            )
    if args.name:
        if not args.images:
            print("enroll: give NAME followed by one or more images", file=sys.stderr)
            return 2
        plan.append((args.name, [Path(p) for p in args.images]))
    if not plan:
        print("enroll: give NAME IMAGE... or --dir FOLDER", file=sys.stderr)
        return 2
    service = _service(settings)
    failed = False
    try:
        for name, images in plan:
            ident_id, count, problems = enroll_images(service, name, images)
            if problems:
                failed = True
                for p in problems:
                    print(f"refused {name}: {p}", file=sys.stderr)
            else:
                print(f"enrolled {name!r}: {count} face(s), identity {ident_id}")
    finally:
        service.close()
    return 1 if failed else 0


# -- replay -------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from .replay import format_event, replay_video, summary_text

    if not Path(args.video).exists():
        print(f"replay: no such file: {args.video}", file=sys.stderr)
        return 2
    service = _service(settings)
    events_file = open(args.events, "w") if args.events else None  # noqa: SIM115
    try:
        summary = asyncio.run(
            replay_video(
                service,
                args.video,
                detector=args.detector,
                realtime=args.realtime,
                events_out=events_file,
                annotate=Path(args.annotate) if args.annotate else None,
                on_event=None if args.quiet else (lambda e: print(format_event(e), flush=True)),
            )
        )
    finally:
        if events_file:
            events_file.close()
        service.close()
    print(summary_text(summary))
    return 0


# -- gallery ------------------------------------------------------------------
def cmd_gallery(args: argparse.Namespace, settings: Settings) -> int:
    from .gallery.reembed import reembed_gallery

    if args.gallery_cmd == "reembed":
        service = _service(settings)
        try:
            n = reembed_gallery(service)
        finally:
            service.close()
        print(f"re-embedded {n} face(s) with {service.model_id}")
        return 0
    if args.gallery_cmd == "list":
        from .gallery.sqlite import SQLiteGallery

        store = SQLiteGallery(settings.gallery_path)
        idents, total = store.list_identities(0, 10_000)
        for ident in idents:
            print(f"{ident.id}  {ident.name}  faces={ident.face_count}")
        print(f"{total} identities; embeddings by model: {store.model_counts()}")
        store.close()
        return 0
    return 2


# -- serve --------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from .app import create_app

    if args.host:
        settings = settings.model_copy(update={"host": args.host})
    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the app logs each request itself, with its request id
        ws_ping_interval=20,
        ws_ping_timeout=20,
        timeout_graceful_shutdown=5,
    )
    return 0


# -- bench --------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from .bench import run_bench

    return run_bench(args, settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-server", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP/WebSocket/WebRTC service")
    s.add_argument("--host", default=None, help="bind address (default FACE_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default FACE_PORT or 8000)")
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("replay", help="run a video file through the live pipeline")
    r.add_argument("video")
    r.add_argument("--detector", choices=["short", "full"], default="full")
    r.add_argument("--realtime", action="store_true", help="pace frames by their timestamps")
    r.add_argument("--events", help="write events as JSON lines to this file")
    r.add_argument("--annotate", help="write an annotated video to this file (.mp4)")
    r.add_argument("--quiet", action="store_true", help="do not print events as they happen")
    r.set_defaults(func=cmd_replay)

    e = sub.add_parser("enroll", help="enrol people from photos")
    e.add_argument("name", nargs="?", help="the person's name")
    e.add_argument("images", nargs="*", help="photos of that person")
    e.add_argument("--dir", help="a folder with one sub-folder of photos per person")
    e.add_argument(
        "--title-case",
        action="store_true",
        help="with --dir: turn folder names like jane_doe into 'Jane Doe'",
    )
    e.set_defaults(func=cmd_enroll)

    m = sub.add_parser("models", help="show which model files are used and where from")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    g = sub.add_parser("gallery", help="gallery maintenance")
    gsub = g.add_subparsers(dest="gallery_cmd", required=True)
    gsub.add_parser("reembed", help="recompute every embedding from the stored aligned crops")
    gsub.add_parser("list", help="list identities")
    g.set_defaults(func=cmd_gallery)

    b = sub.add_parser("bench", help="benchmarks (pipeline vs naive loop vs detect-only)")
    b.add_argument("what", nargs="?", default="pipeline", choices=["pipeline"])
    b.add_argument("--video", default=None, help="video to replay (default: the test clip)")
    b.add_argument("--detector", choices=["short", "full"], default="full")
    b.add_argument("--enroll-dir", default=None, help="people folder to enrol first")
    b.add_argument("--json", default=None, help="also write the results to this JSON file")
    b.add_argument("--repeat", type=int, default=2, help="interleaved runs of each (best kept)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .config import ConfigurationError
        from .models import ModelNotFoundError

        if isinstance(exc, ModelNotFoundError):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        if isinstance(exc, ConfigurationError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
