# Our production image with granian added, for the server comparison only: the
# product does not ship it. Its build figures are ours plus this one layer.
ARG PYTHON_IMAGE=python:3.14-slim
ARG BASE_IMAGE
FROM ${PYTHON_IMAGE} AS tools
ARG UV_VERSION=0.13.9
RUN python -m venv /tools && /tools/bin/pip install --no-cache-dir "uv==${UV_VERSION}"

# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
USER root
RUN --mount=type=bind,from=tools,source=/tools,target=/tools \
    --mount=type=bind,source=granian.txt,target=/tmp/granian.txt \
    /tools/bin/uv pip install --python /opt/venv/bin/python --require-hashes \
        --compile-bytecode -r /tmp/granian.txt
USER 10001:10001
