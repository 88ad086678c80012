"""Pipeline vs naive loop vs detect-only on the test clip (same as `stream-server bench`).

    FACE_MODEL_DIR=../shared/models FACE_TEST_MEDIA=../shared/media \
        .venv/bin/python benchmarks/pipeline_vs_naive.py --detector full
"""

import sys

from stream_server.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))
