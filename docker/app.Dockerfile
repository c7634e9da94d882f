# One image for every Python service (producer, Spark master/worker, stream job, exporter, view).
# BASE_IMAGE defaults to the public Python image; scripts/compose-local.sh passes a local stand-in.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# Spark needs a JRE (17 on bookworm, 21 on trixie: both run Spark 4.0); procps for spark-class.
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYTHONUNBUFFERED=1
WORKDIR /app
# Dependencies first, against empty packages (every one pyproject.toml lists, or setuptools
# refuses the install), so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python3 -c "import pathlib, tomllib; \
[pathlib.Path(name.replace('.', '/')).mkdir(parents=True, exist_ok=True) \
 for name in tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages']]" \
 && touch pipeline/__init__.py && pip install --no-cache-dir -e .
COPY pipeline ./pipeline
# The Kafka connector jars resolved by `make deps` (Maven Central), and the state operator it builds (jvm/).
COPY .cache/jars/spark ./.cache/jars/spark
COPY .cache/jars/energy ./.cache/jars/energy

# Named volumes mounted under /data start with this ownership, so the services can write them.
RUN useradd --create-home --uid 1000 energy && mkdir -p /data/checkpoints /data/history /data/work && chown -R energy /data
USER energy
ENV VAR_DIR=/data CHECKPOINT_ROOT=/data/checkpoints HISTORY_ROOT=/data/history METRICS_HOST=0.0.0.0 \
    SPARK_WORKER_DIR=/data/work
# Spark writes scratch folders (artifacts/, spark-warehouse/) into the working directory.
WORKDIR /data
