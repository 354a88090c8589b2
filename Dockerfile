# syntax=docker/dockerfile:1
# vggserve images. Targets:
#   runtime  (default) CPU server and trainer:   docker build -t vggserve .
#   gpu      the same on TensorFlow's CUDA wheels: docker build --target gpu -t vggserve:gpu .
#   loadtest runtime plus locust:                 docker build --target loadtest -t vggserve:loadtest .
# No model and no secret is baked in: models live in a volume (/models).

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Dependencies in their own layers, built from the project's pinned files.
FROM base AS deps
COPY requirements.txt constraints.txt ./
RUN python -m venv /opt/venv \
    && pip install -r requirements.txt -c constraints.txt

FROM deps AS deps-gpu
# tensorflow[and-cuda] adds the CUDA and cuDNN wheels matching TensorFlow.
RUN pip install "tensorflow[and-cuda]==2.21.0" -c constraints.txt

FROM base AS app
RUN groupadd --system --gid 10001 vggserve \
    && useradd --system --uid 10001 --gid vggserve --home-dir /app --shell /usr/sbin/nologin vggserve \
    && mkdir -p /models \
    && chown vggserve:vggserve /models
COPY pyproject.toml README.md ./
COPY model/ model/
COPY service/ service/
COPY vggclient/ vggclient/
COPY vggcommon/ vggcommon/
COPY vggserve_cli/ vggserve_cli/
COPY protos/ protos/
COPY loadtest/ loadtest/
ENV PYTHONPATH=/app
EXPOSE 8500 8501
# The standard gRPC health service, asked through the project's own client.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "vggclient.healthcheck", "--target", "127.0.0.1:8500"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["--model-dir", "/models/vgg-mini"]

FROM app AS gpu
COPY --from=deps-gpu /opt/venv /opt/venv
USER vggserve

FROM app AS loadtest
COPY --from=deps /opt/venv /opt/venv
COPY constraints.txt ./
RUN pip install "locust==2.47.0" -c constraints.txt
USER vggserve
ENTRYPOINT ["python", "-m", "loadtest"]

FROM app AS runtime
COPY --from=deps /opt/venv /opt/venv
USER vggserve
