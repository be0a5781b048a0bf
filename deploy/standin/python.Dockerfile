# Stands in for the official python:<version>-slim-<suite> image on machines that reach no image registry:
# Debian's own Python 3 on a debootstrapped minbase (imported by deploy/local-engine.sh as the base below).
# Only deploy/local-engine.sh builds it, and only when the pinned image is neither present nor pullable.
ARG ROOTFS=facegender-standin/debian:bookworm
# hadolint ignore=DL3006
FROM ${ROOTFS}
ENV LANG=C.UTF-8
# The build context holds the host's extra CA certificates (if any), so that pip and apt in image builds reach
# the package registries through a TLS-inspecting proxy the host trusts. They are never part of the repository.
COPY ca-certificates/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv python-is-python3 \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.description="local stand-in for the official Python image (Debian python3)"
CMD ["python3"]
