# The worker image: the static devops binary on a small userland for the
# commands it runs. By default the base is devops-base:busybox, built locally
# from Debian's busybox-static by scripts/docker-base.sh (no registry needed);
# with a registry, `make docker-build BASE_IMAGE=debian:bookworm-slim` gives a
# fuller userland.
ARG BASE_IMAGE=devops-base:busybox
FROM ${BASE_IMAGE}

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=
ARG BASE_IMAGE=devops-base:busybox
LABEL org.opencontainers.image.title="devops-worker" \
      org.opencontainers.image.description="DevOps Platform worker: runs commands in isolation and streams their output" \
      org.opencontainers.image.source="https://github.com/devops-platform/devops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# One COPY of a staged tree (/usr/local/bin/devops and an empty /data), not
# RUN: it works on any base, with or without a shell. (Two COPYs where the
# first changes nothing trip "layer does not exist" on this engine's
# fuse-overlayfs.)
COPY worker/ /

# The worker runs as root on purpose: its executor puts each command in its
# own PID/mount/UTS/IPC namespaces and cgroup, and runs commands as other
# users (--user), which needs root (and, in a container, CAP_SYS_ADMIN: see
# docker-compose.yml). Without those privileges the executor falls back to a
# process group per command with no namespaces or cgroup limits, and
# `devops workers -o wide` shows what each worker can enforce.
USER 0:0
VOLUME ["/data"]
EXPOSE 50052
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/devops", "healthcheck", "--addr", "127.0.0.1:50052"]
ENTRYPOINT ["/usr/local/bin/devops"]
CMD ["worker", "--data-dir=/data", "--listen=:50052"]
