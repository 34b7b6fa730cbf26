# Anchor: the backend Dockerfile of fastapi/full-stack-fastapi-template
# (backend/Dockerfile: one stage, uv, bytecode compiled at install), reproduced to
# build the same app from the same base and lock as ours. Adaptations:
#   - Base: ${PYTHON_IMAGE} (our slim base) instead of the full python:3.10 image.
#   - uv from the package index with pip, at our version, instead of
#     `COPY --from=ghcr.io/astral-sh/uv` (not reachable here); pip's download cache
#     stays out of the image, as the copied binary would bring none.
#   - The lock: the project locks with hash-pinned requirements.txt, not uv.lock, so
#     `uv sync --frozen --no-install-project` becomes `uv venv` and
#     `uv pip install --require-hashes -r requirements.txt` into the same /app/.venv,
#     with the same cache and bind mounts. The app is not a package: the final
#     `uv sync` has nothing left to install.
#   - COPY: the project's scripts, pyproject.toml, alembic.ini, app and tests, as the
#     original copies its own (no uv.lock), and the project's migrations, which the
#     original keeps under app/.
#   - CMD: `fastapi run --workers 4` needs fastapi-cli, which the lock does not hold;
#     it runs uvicorn, so uvicorn runs the app directly at fastapi run's settings,
#     its workers from WEB_CONCURRENCY as the benchmark sets it rather than 4.
ARG PYTHON_VERSION=3.14
ARG PYTHON_IMAGE=python:${PYTHON_VERSION}-slim
FROM ${PYTHON_IMAGE}
ARG UV_VERSION=0.13.9
ENV PYTHONUNBUFFERED=1
WORKDIR /app/
RUN pip install --no-cache-dir --root-user-action=ignore "uv==${UV_VERSION}"
ENV PATH="/app/.venv/bin:$PATH"
ENV UV_COMPILE_BYTECODE=1
ENV UV_LINK_MODE=copy
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=requirements.txt,target=requirements.txt \
    uv venv /app/.venv \
    && uv pip install --python /app/.venv/bin/python --require-hashes -r requirements.txt
ENV PYTHONPATH=/app
COPY ./scripts /app/scripts
COPY ./pyproject.toml ./alembic.ini /app/
COPY ./migrations /app/migrations
COPY ./app /app/app
COPY ./tests /app/tests
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
