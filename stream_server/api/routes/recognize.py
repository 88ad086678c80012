"""Still images: 1:1 compare and 1:N recognise."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from ...service import FaceService
from ..errors import ApiError, responses
from ..ratelimit import rate_limited
from ..schemas import BoxOut, ComparedFace, CompareResponse, RecognizedFace, RecognizeResponse
from ..stills import AnalysedImage, StillAnalyser, cosine, read_upload

log = logging.getLogger(__name__)
router = APIRouter(tags=["recognition"])


def _one_face(found: AnalysedImage, field: str, largest_face: bool):
    if not found.faces:
        raise ApiError(422, "no_face", f"{field}: no face found")
    if found.faces_found > 1 and not largest_face:
        raise ApiError(
            422,
            "several_faces",
            f"{field}: {found.faces_found} faces found; send an image with one face, or "
            "largest_face=true to compare the largest",
        )
    return found.faces[0]


@router.post(
    "/compare-faces",
    response_model=CompareResponse,
    summary="1:1: are the faces of two images the same person?",
    description=(
        "Multipart fields `image_a` and `image_b`, each holding one face (or, with "
        "`largest_face=true`, the largest face of each is compared). `same_person` is "
        "the decision at the configured threshold (`FACE_MATCH_THRESHOLD`)."
    ),
    responses=responses(400, 401, 413, 422, 429),
    dependencies=[rate_limited("compare")],
)
async def compare_faces(
    request: Request,
    image_a: Annotated[UploadFile, File(description="First image")],
    image_b: Annotated[UploadFile, File(description="Second image")],
    largest_face: Annotated[
        bool, Query(description="Use the largest face of an image that holds several")
    ] = False,
) -> CompareResponse:
    service: FaceService = request.app.state.service
    stills: StillAnalyser = request.app.state.stills
    data_a = await read_upload(image_a)
    data_b = await read_upload(image_b)
    found_a = await stills.analyse(data_a, "image_a", max_faces=1)
    face_a = _one_face(found_a, "image_a", largest_face)
    found_b = await stills.analyse(data_b, "image_b", max_faces=1)
    face_b = _one_face(found_b, "image_b", largest_face)
    similarity = cosine(face_a.embedding, face_b.embedding)
    threshold = float(request.app.state.settings.match_threshold)
    return CompareResponse(
        similarity=round(similarity, 4),
        same_person=similarity >= threshold,
        threshold=threshold,
        model_id=service.model_id,
        face_a=ComparedFace(
            box=BoxOut.of(face_a.detection.box),
            quality=round(face_a.quality.overall, 4),
            faces_found=found_a.faces_found,
        ),
        face_b=ComparedFace(
            box=BoxOut.of(face_b.detection.box),
            quality=round(face_b.quality.overall, 4),
            faces_found=found_b.faces_found,
        ),
    )


@router.post(
    "/recognize",
    response_model=RecognizeResponse,
    summary="1:N: who is in this image?",
    description=(
        "Multipart field `image`. Every face found (largest first, up to `max_faces`) "
        "with its best identity, or unknown. A face is named when its best identity's "
        "similarity reaches the threshold and leads the runner-up by the margin (the "
        "same rule the live streams use for each embedding). An image without faces "
        "answers `faces: []`."
    ),
    responses=responses(400, 401, 413, 422, 429),
    dependencies=[rate_limited("recognize")],
)
async def recognize(
    request: Request,
    image: Annotated[UploadFile, File(description="The image to search for faces")],
    max_faces: Annotated[
        int | None, Query(ge=1, le=500, description="At most this many faces (largest first)")
    ] = None,
) -> RecognizeResponse:
    service: FaceService = request.app.state.service
    settings = request.app.state.settings
    stills: StillAnalyser = request.app.state.stills
    limit = max_faces or settings.recognize_max_faces
    data = await read_upload(image)
    found = await stills.analyse(data, "image", max_faces=limit)
    gallery = service.gallery
    index = gallery.index  # one snapshot for the whole image
    matches = []
    if found.faces:  # a large gallery makes this a sizeable matrix product: not on the loop
        matches = await asyncio.to_thread(index.search_many, [f.embedding for f in found.faces])
    threshold = float(settings.match_threshold)
    margin = float(settings.match_margin)
    faces = []
    for face, match in zip(found.faces, matches, strict=True):
        named = match.named(threshold, margin)
        faces.append(
            RecognizedFace(
                box=BoxOut.of(face.detection.box),
                quality=round(face.quality.overall, 4),
                known=named is not None,
                identity_id=named.identity_id if named else None,
                name=named.name if named else None,
                similarity=round(match.best.similarity, 4) if match.best is not None else None,
            )
        )
    warnings = [w for w in (gallery.foreign_warning(),) if w]
    return RecognizeResponse(
        faces=faces,
        faces_found=found.faces_found,
        threshold=threshold,
        margin=margin,
        model_id=service.model_id,
        gallery_identities=index.size,
        image={"width": found.width, "height": found.height},
        warnings=warnings,
    )
