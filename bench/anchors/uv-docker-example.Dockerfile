# Anchor: the multistage Dockerfile of astral-sh/uv-docker-example
# (multistage.Dockerfile: uv, bytecode compiled at install, a final stage without uv),
# reproduced to build the same app from the same base and lock as ours. Adaptations:
#   - Base: ${PYTHON_IMAGE} (our base) for both stages instead of
#     ghcr.io/astral-sh/uv:python3.12-bookworm-slim and python:3.12-slim-bookworm; the
#     builder gets uv from the package index with pip (the uv image is not reachable
#     here), at our version.
#   - The lock: the project locks with hash-pinned requirements.txt, not uv.lock, so
#     `uv sync --locked --no-install-project --no-dev` becomes `uv venv` and
#     `uv pip install --require-hashes -r requirements.txt` into the same /app/.venv,
#     with the same cache and bind mounts. The app is not a package: the second
#     `uv sync`, which installs the project itself, has nothing left to do.
#   - `COPY . /app` copies the build context without our .dockerignore, as the
#     example's repository has its own one for its own files.
#   - CMD: `fastapi run` needs fastapi-cli, which the lock does not hold; it runs
#     uvicorn, so uvicorn runs the app directly, at fastapi run's settings (0.0.0.0,
#     port 8000, its workers from WEB_CONCURRENCY as the benchmark sets it).
ARG PYTHON_VERSION=3.14
ARG PYTHON_IMAGE=python:${PYTHON_VERSION}-slim
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
ENV UV_PYTHON_DOWNLOADS=0
RUN pip install --no-cache-dir --root-user-action=ignore "uv==${UV_VERSION}"

WORKDIR /app
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=requirements.txt,target=requirements.txt \
    uv venv /app/.venv \
    && uv pip install --python /app/.venv/bin/python --require-hashes -r requirements.txt
COPY . /app

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 999 nonroot \
 && useradd --system --gid 999 --uid 999 --create-home nonroot
COPY --from=builder --chown=nonroot:nonroot /app /app
ENV PATH="/app/.venv/bin:$PATH"
USER nonroot
WORKDIR /app
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
