# Local stand-in for python:3.12-slim (Debian's Python 3.11), for machines without a registry.
# host-ca/ holds the build host's extra CA certificates (scripts/compose-local.sh copies them):
# where outgoing TLS is intercepted, pip inside the build must trust what the host trusts.
FROM energy-local/debian:bookworm
COPY host-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
