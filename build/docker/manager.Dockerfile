# The manager image: the static devops binary and CA certificates, nothing
# else (no shell, no libc). Built by `make docker-build` (scripts/docker-build.sh)
# from a small staged context: the binary is built on the host with
# CGO_ENABLED=0, so nothing has to be pulled from a registry.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=
LABEL org.opencontainers.image.title="devops-manager" \
      org.opencontainers.image.description="DevOps Platform manager: registers workers, places commands, keeps records and output" \
      org.opencontainers.image.source="https://github.com/devops-platform/devops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

# manager/ holds /usr/local/bin/devops, /etc/passwd and /etc/group (so the
# uid has a name), the CA bundle copied from the host and /tmp (1777); data/
# becomes /data owned by 10001, which a fresh named volume mounted there
# inherits.
COPY manager/ /
COPY --chown=10001:10001 data/ /data/

# The manager needs no privilege: it only listens on unprivileged ports and
# writes /data.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 50051 8080
# scratch has no shell or probe tool: the binary asks its own gRPC health service.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/devops", "healthcheck", "--addr", "127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/devops"]
CMD ["manager", "--data-dir=/data", "--listen=:50051", "--http=:8080"]
