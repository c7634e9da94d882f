# Local stand-in for prom/alertmanager, from Debian's package, with the same entrypoint path.
FROM energy-local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus-alertmanager wget \
 && ln -sf /usr/bin/prometheus-alertmanager /bin/alertmanager \
 && mkdir -p /alertmanager && chown nobody:nogroup /alertmanager \
 && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["/bin/alertmanager"]
