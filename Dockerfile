# streamdet daemon image: multi-stage, slim, non-root, CPU torch by default.
#   docker build -t streamdet .                                   # CPU
#   docker build -t streamdet:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#   docker build -t streamdet:nocc --build-arg COMPILER= .           # no C++ compiler (scoring.compile: aoti falls back)
# Mount the config (and bundle) at /etc/streamdet; see deploy/README.md.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/streamdet
ENV PATH=/opt/streamdet/bin:$PATH
WORKDIR /src
COPY requirements.txt ./
# torch first, from the chosen index (CPU wheels by default; never the multi-GB CUDA default from PyPI)
RUN pip install --index-url "${TORCH_INDEX}" "$(grep -E '^torch==' requirements.txt)" \
 && pip install -r requirements.txt
COPY setup.cfg pyproject.toml README.md ./
COPY streamdet ./streamdet
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
# the config baked in as the default (mount another over it); the bundle is mounted, see deploy/README.md
ARG CONFIG=deploy/streamdet.yaml
# scoring.compile: aoti compiles an exported bundle for the CPU the container runs on, at start-up, with this C++
# compiler (about 200 MB); the package is built where it runs, so it fits that host (deploy/README.md, Compilation)
ARG COMPILER=g++
RUN if [ -n "${COMPILER}" ]; then apt-get update && apt-get install -y --no-install-recommends ${COMPILER} \
    && rm -rf /var/lib/apt/lists/*; fi
# bundles/ exists and belongs to streamdet so a fresh named volume mounted there is writable by `train`; cache/
# holds compiled packages (mount a volume there so that a restart does not recompile)
RUN useradd --system --uid 10001 --home-dir /var/lib/streamdet --create-home streamdet \
 && mkdir -p /etc/streamdet /var/lib/streamdet/bundles /var/lib/streamdet/cache \
 && chown streamdet /etc/streamdet /var/lib/streamdet/bundles /var/lib/streamdet/cache
COPY --from=builder /opt/streamdet /opt/streamdet
ENV PATH=/opt/streamdet/bin:$PATH PYTHONUNBUFFERED=1 STREAMDET_CACHE=/var/lib/streamdet/cache
COPY ${CONFIG} /etc/streamdet/config.yaml
USER streamdet
WORKDIR /var/lib/streamdet
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2).status == 200 else 1)"
# SIGTERM: the daemon stops polling, drains, publishes, commits and exits 0 well within Docker's default 10 s
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamdet"]
CMD ["run", "--config", "/etc/streamdet/config.yaml"]
