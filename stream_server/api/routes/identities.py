"""The gallery over HTTP: identities, their faces, enrolment and thumbnails.

Every mutation is one SQLite transaction, and the live matcher is refreshed
before the response is sent, so running streams match against the new gallery
from their next embedding on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from ...gallery.store import FaceNotFound, IdentityNotFound, NewFace
from ...service import FaceService, ImageError
from ..errors import ApiError, responses
from ..ratelimit import rate_limited
from ..schemas import (
    EnrolRefused,
    EnrolResponse,
    FaceList,
    FaceOut,
    IdentityCreate,
    IdentityOut,
    IdentityPage,
    IdentityUpdate,
    ImageResult,
)
from ..stills import AnalysedImage, StillAnalyser, read_upload

log = logging.getLogger(__name__)
router = APIRouter(tags=["gallery"])

IdentityId = Annotated[
    str, Path(min_length=1, max_length=64, description="The identity's id (from POST /identities)")
]
FaceId = Annotated[str, Path(min_length=1, max_length=64, description="The face's id")]


def _service(request: Request) -> FaceService:
    return request.app.state.service


def _stills(request: Request) -> StillAnalyser:
    return request.app.state.stills


def _no_identity(identity_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no identity with id {identity_id!r}")


def _no_face(identity_id: str, face_id: str) -> ApiError:
    return ApiError(404, "not_found", f"identity {identity_id!r} has no face with id {face_id!r}")


async def _refresh(service: FaceService) -> None:
    """Make the live matcher (every running stream) see the gallery as stored now."""
    await asyncio.to_thread(service.refresh_gallery)


# -- identities -----------------------------------------------------------------
@router.post(
    "/identities",
    status_code=201,
    response_model=IdentityOut,
    summary="Create an identity (then add faces to it)",
    responses=responses(401, 413, 422),
)
async def create_identity(body: IdentityCreate, request: Request) -> IdentityOut:
    service = _service(request)
    ident = await asyncio.to_thread(
        service.store.create_identity, body.name, body.external_id, body.metadata
    )
    await _refresh(service)
    log.info("identity %s created", ident.id)
    return IdentityOut.of(ident)


@router.get(
    "/identities",
    response_model=IdentityPage,
    summary="List identities, oldest first, a page at a time",
    responses=responses(401, 422),
)
async def list_identities(
    request: Request,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> IdentityPage:
    items, total = await asyncio.to_thread(_service(request).store.list_identities, offset, limit)
    return IdentityPage(
        items=[IdentityOut.of(i) for i in items], total=total, offset=offset, limit=limit
    )


@router.get(
    "/identities/{identity_id}",
    response_model=IdentityOut,
    summary="One identity",
    responses=responses(401, 404, 422),
)
async def get_identity(identity_id: IdentityId, request: Request) -> IdentityOut:
    try:
        ident = await asyncio.to_thread(_service(request).store.get_identity, identity_id)
    except IdentityNotFound:
        raise _no_identity(identity_id) from None
    return IdentityOut.of(ident)


@router.patch(
    "/identities/{identity_id}",
    response_model=IdentityOut,
    summary="Change an identity's name, external id or metadata",
    responses=responses(401, 404, 413, 422),
)
async def update_identity(
    identity_id: IdentityId, body: IdentityUpdate, request: Request
) -> IdentityOut:
    service = _service(request)
    given = body.model_fields_set
    if "name" in given and body.name is None:
        raise ApiError(422, "invalid_request", "name cannot be null")
    if "metadata" in given and body.metadata is None:
        raise ApiError(422, "invalid_request", "metadata cannot be null; send {} to empty it")
    kwargs: dict = {"name": body.name, "metadata": body.metadata}
    if "external_id" in given:
        kwargs["external_id"] = body.external_id
    try:
        ident = await asyncio.to_thread(service.store.update_identity, identity_id, **kwargs)
    except IdentityNotFound:
        raise _no_identity(identity_id) from None
    if body.name is not None:
        await _refresh(service)  # names travel with matches
    return IdentityOut.of(ident)


@router.delete(
    "/identities/{identity_id}",
    status_code=204,
    summary="Delete an identity with all its faces and thumbnails",
    responses=responses(401, 404, 422),
)
async def delete_identity(identity_id: IdentityId, request: Request) -> Response:
    service = _service(request)
    try:
        await asyncio.to_thread(service.store.delete_identity, identity_id)
    except IdentityNotFound:
        raise _no_identity(identity_id) from None
    await _refresh(service)
    log.info("identity %s deleted", identity_id)
    return Response(status_code=204)


# -- faces ----------------------------------------------------------------------
def _judge(
    result: AnalysedImage | ImageError,
    index: int,
    filename: str | None,
    largest_face: bool,
    min_face_px: int,
    min_quality: float,
) -> ImageResult:
    """Is this image's face fit to enrol? (status "stored" means: accepted so far)."""
    base = {"index": index, "filename": filename}
    if isinstance(result, ImageError):
        return ImageResult(**base, status="refused", error=str(result))
    n = result.faces_found
    if n == 0:
        return ImageResult(**base, status="refused", error="no face found")
    if n > 1 and not largest_face:
        return ImageResult(
            **base,
            status="refused",
            faces_found=n,
            error=f"{n} faces found: send one face per image, or largest_face=true "
            "to enrol the largest",
        )
    face = result.faces[0]
    info = {
        **base,
        "faces_found": n,
        "box": face.detection.box.as_list(),
        "quality": round(face.quality.overall, 4),
    }
    info["box"] = dict(zip(("x", "y", "w", "h"), info["box"], strict=True))
    if face.quality.size_px < min_face_px:
        return ImageResult(
            **info,
            status="refused",
            error=f"face too small: {face.quality.size_px:.0f} px, at least {min_face_px} needed",
        )
    if face.quality.overall < min_quality:
        return ImageResult(
            **info,
            status="refused",
            error=f"face quality {face.quality.overall:.2f} below {min_quality:.2f} "
            "(blurred, turned away or partly hidden)",
        )
    return ImageResult(**info, status="stored")


@router.post(
    "/identities/{identity_id}/faces",
    status_code=201,
    response_model=EnrolResponse,
    summary="Enrol faces: one or more photos of this person",
    description=(
        "Multipart field `files`, repeated once per image. Each image must hold exactly "
        "one face, or with `largest_face=true` its largest face is taken. A face must be "
        "big and clear enough (see the settings `FACE_ENROL_MIN_FACE_PX`, "
        "`FACE_ENROL_MIN_QUALITY`). All-or-nothing: if any image is refused, nothing is "
        "stored and the answer is 422 with the per-image results, unless "
        "`keep_good=true`, which stores the good ones. The live matcher sees the new "
        "faces before this call returns."
    ),
    responses={
        **responses(400, 401, 404, 413, 429),
        422: {"model": EnrolRefused, "description": "Images refused; nothing stored"},
    },
    dependencies=[rate_limited("enrol")],
)
async def add_faces(
    identity_id: IdentityId,
    request: Request,
    files: Annotated[list[UploadFile], File(description="One or more images (JPEG, PNG, …)")],
    largest_face: Annotated[
        bool, Query(description="Take the largest face of an image that holds several")
    ] = False,
    keep_good: Annotated[
        bool, Query(description="Store the accepted images even when others are refused")
    ] = False,
) -> JSONResponse:
    service = _service(request)
    settings = request.app.state.settings
    if len(files) > settings.enrol_max_images:
        raise ApiError(
            422,
            "too_many_images",
            f"{len(files)} images sent; at most {settings.enrol_max_images} per request",
        )
    try:
        await asyncio.to_thread(service.store.get_identity, identity_id)
    except IdentityNotFound:
        raise _no_identity(identity_id) from None

    names = [f.filename for f in files]
    datas = [await read_upload(f) for f in files]
    analysed = await _stills(request).analyse_many(datas)
    results = [
        _judge(
            a,
            i,
            names[i],
            largest_face,
            settings.enrol_min_face_px,
            settings.enrol_min_quality,
        )
        for i, a in enumerate(analysed)
    ]
    good = [i for i, r in enumerate(results) if r.status == "stored"]
    refused = len(results) - len(good)
    if refused and (not keep_good or not good):
        for r in results:
            if r.status == "stored":
                r.status = "not_stored"
        detail = (
            f"{refused} of {len(results)} images refused; nothing stored"
            + (" (keep_good=true stores the good ones)" if good else "")
            + ": "
            + "; ".join(f"#{r.index} {r.filename or ''}: {r.error}" for r in results if r.error)
        )
        body = EnrolRefused(
            error="images_refused",
            detail=detail,
            identity_id=identity_id,
            stored=0,
            refused=refused,
            results=results,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=422)

    def to_store() -> list[NewFace]:  # PNG-encodes the aligned crops: a worker thread's job
        return [
            service.new_face(analysed[i].faces[0], (names[i] or "")[:200])  # type: ignore[union-attr]
            for i in good
        ]

    new_faces = await asyncio.to_thread(to_store)
    try:
        records = await asyncio.to_thread(service.store.add_faces, identity_id, new_faces)
    except IdentityNotFound:  # deleted while we were analysing
        raise _no_identity(identity_id) from None
    await _refresh(service)
    for i, rec in zip(good, records, strict=True):
        results[i].face_id = rec.id
    log.info("identity %s: %d face(s) enrolled, %d refused", identity_id, len(records), refused)
    body = EnrolResponse(
        identity_id=identity_id, stored=len(records), refused=refused, results=results
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=201)


@router.get(
    "/identities/{identity_id}/faces",
    response_model=FaceList,
    summary="The faces stored for an identity",
    responses=responses(401, 404, 422),
)
async def list_faces(identity_id: IdentityId, request: Request) -> FaceList:
    service = _service(request)
    try:
        faces = await asyncio.to_thread(service.store.list_faces, identity_id)
    except IdentityNotFound:
        raise _no_identity(identity_id) from None
    return FaceList(identity_id=identity_id, items=[FaceOut.of(f, service.model_id) for f in faces])


@router.delete(
    "/identities/{identity_id}/faces/{face_id}",
    status_code=204,
    summary="Delete one face (its template and thumbnail)",
    responses=responses(401, 404, 422),
)
async def delete_face(identity_id: IdentityId, face_id: FaceId, request: Request) -> Response:
    service = _service(request)
    try:
        await asyncio.to_thread(service.store.delete_face, identity_id, face_id)
    except FaceNotFound:
        raise _no_face(identity_id, face_id) from None
    await _refresh(service)
    return Response(status_code=204)


@router.get(
    "/identities/{identity_id}/faces/{face_id}/thumbnail",
    summary="The face's aligned 112x112 crop, as PNG",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "PNG image"},
        **responses(401, 404, 422),
    },
)
async def face_thumbnail(identity_id: IdentityId, face_id: FaceId, request: Request) -> Response:
    try:
        png = await asyncio.to_thread(_service(request).store.face_crop, identity_id, face_id)
    except IdentityNotFound:
        raise _no_face(identity_id, face_id) from None
    return Response(
        png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"}
    )
