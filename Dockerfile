# syntax=docker/dockerfile:1
#
# stream-server: one server process per container. The embedding pool runs
# inside it; scale with more replicas (see README "Deployment").
#
#   docker build -t stream-server .                          # models fetched at first start
#   docker build -t stream-server --build-arg BAKE_MODELS=1 .  # models inside the image
#
# Without baked models, the first start downloads them into /data/models (a
# volume), or finds them in FACE_MODEL_DIR (mount a folder holding them there).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: compile what has no wheel (insightface), resolve models -------------
FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# insightface ships as a source package with a Cython extension: it needs a compiler.
# Debian versions are not pinned: the slim base's apt gets security fixes that way.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore lets only the package, the web client and pyproject/README in.
COPY . ./
# The dependencies, not the package itself: the runtime stage runs the code from
# /app, next to web_client/, which the app serves.
RUN pip install . \
    && pip uninstall -y stream-server

# mediapipe and insightface pull in the GUI OpenCV wheels, which need libGL and
# X11 libraries. They share the cv2 package with the headless build: remove them
# and reinstall the headless one cleanly (as scripts/setup does), then prove it.
RUN pip uninstall -y opencv-python opencv-contrib-python \
    && pip install --force-reinstall --no-deps \
        "opencv-python-headless==$(pip show opencv-python-headless | awk '/^Version:/{print $2}')" \
    && python -c "import importlib.metadata as m, sys; gui = [d for d in ('opencv-python', 'opencv-contrib-python') if any(x.metadata['Name'] == d for x in m.distributions())]; sys.exit(f'GUI OpenCV left: {gui}' if gui else 0)" \
    && python -c "import cv2; print('cv2', cv2.__version__)"

# Models: BAKE_MODELS=1 downloads and verifies them now (stream-server models),
# otherwise the folder stays empty and the first start fetches them.
ARG BAKE_MODELS=0
ARG EMBEDDER_MODEL=buffalo_s
RUN mkdir -p /opt/models \
    && if [ "$BAKE_MODELS" = "1" ]; then \
        FACE_DATA_DIR=/tmp/bake FACE_EMBEDDER_MODEL="$EMBEDDER_MODEL" python -m stream_server.cli models \
        && rm -rf /tmp/bake/models/insightface \
        && cp -r /tmp/bake/models/. /opt/models/ \
        && rm -rf /tmp/bake; \
    fi

# ---- runtime ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# MediaPipe's task library links the EGL and GLES dispatch libraries (libglvnd)
# even on CPU; nothing else. No libGL/GLX/Mesa, no X11: OpenCV is headless.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgles2 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
WORKDIR /app
COPY . ./

# HOME and caches in /tmp: the root filesystem may be read-only (compose, k8s), and
# onnxruntime keeps a small cache under $HOME/.cache.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    FACE_HOST=0.0.0.0 \
    FACE_PORT=8000 \
    FACE_DATA_DIR=/data \
    FACE_MODEL_DIR=/opt/models \
    FACE_ENVIRONMENT=production \
    FACE_LOG_FORMAT=json

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# Liveness from inside the container, without curl: Python's urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FACE_PORT', '8000') + '/health', timeout=4)"]

# One process: uvicorn with the app; its embed pool and streams live in it.
ENTRYPOINT ["python", "-m", "stream_server.cli"]
CMD ["serve"]
