# The agent image for nanoclaw's Docker sandbox backend. Build it locally:
#   ./scripts/build-agent-image.sh            (FROM debian:bookworm-slim, the default)
# Nothing is pulled at run time: the daemon only ever uses the image built here.
# nanoclaw bind-mounts its own binary at /.nanoclaw/init, so the base must have a glibc at
# least as new as the host's.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# 1 installs the tools an agent uses; 0 keeps the base as it is (a base that has them already).
ARG INSTALL_PACKAGES=1
RUN if [ "$INSTALL_PACKAGES" = 1 ]; then \
      apt-get update && \
      apt-get install -y --no-install-recommends bash coreutils findutils grep sed python3 git curl ca-certificates && \
      rm -rf /var/lib/apt/lists/*; \
    fi && \
    mkdir -p /workspace /.nanoclaw /run/nanoclaw && chown 1000:1000 /workspace
LABEL org.nanoclaw.agent-image="1"
USER 1000:1000
WORKDIR /workspace
