# Local stand-in for prom/prometheus, from Debian's package, with the same entrypoint path
# (/bin/prometheus: bookworm's /bin is /usr/bin).
FROM energy-local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus \
 && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["/bin/prometheus"]
