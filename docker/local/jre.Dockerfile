# Local stand-in for eclipse-temurin:17-jre (Debian's OpenJDK 17).
FROM energy-local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless ca-certificates \
 && rm -rf /var/lib/apt/lists/*
