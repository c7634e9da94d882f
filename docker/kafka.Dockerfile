# Apache Kafka (KRaft, single node) from the Maven Central jars resolved by `make deps`.
ARG JRE_IMAGE=eclipse-temurin:17-jre
FROM ${JRE_IMAGE}
COPY .cache/jars/kafka /opt/kafka/libs
COPY docker/kafka-entrypoint.sh /opt/kafka/entrypoint.sh
COPY docker/kafka-log4j2.properties /opt/kafka/log4j2.properties
RUN useradd --create-home --uid 1000 kafka && mkdir -p /var/lib/kafka && chown kafka /var/lib/kafka
USER kafka
VOLUME /var/lib/kafka
ENTRYPOINT ["/bin/bash", "/opt/kafka/entrypoint.sh"]
