# Stands in for prom/prometheus on machines that reach no image registry: Debian's prometheus package.
# Only deploy/local-engine.sh builds it, and only when the pinned image is neither present nor pullable.
ARG ROOTFS=facegender-standin/debian:bookworm
# hadolint ignore=DL3006
FROM ${ROOTFS}
COPY ca-certificates/ /usr/local/share/ca-certificates/
# wget: the compose healthcheck calls `wget -q --spider`, as the official image's busybox provides.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus /etc/prometheus \
    && chown 65534:65534 /prometheus
LABEL org.opencontainers.image.description="local stand-in for prom/prometheus (Debian's prometheus package)"
# As the official image: runs as nobody (65534), data in /prometheus, the same entrypoint and default flags.
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
