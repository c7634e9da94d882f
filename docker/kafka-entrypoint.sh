#!/bin/bash
# Writes server.properties from KAFKA_CFG_* variables (KAFKA_CFG_LOG_DIRS -> log.dirs), formats
# the storage on first start, then runs the broker in the foreground.
set -euo pipefail
conf=/var/lib/kafka/server.properties
: > "$conf"
while IFS='=' read -r name value; do
  key=$(tr 'A-Z_' 'a-z.' <<<"${name#KAFKA_CFG_}")
  echo "$key=$value" >> "$conf"
done < <(env | grep '^KAFKA_CFG_' | sort)
classpath='/opt/kafka/libs/*'
log_dirs=$(sed -n 's/^log\.dirs=//p' "$conf")
if [ ! -f "$log_dirs/meta.properties" ]; then
  java -cp "$classpath" kafka.tools.StorageTool format -t "${KAFKA_CLUSTER_ID:?}" -c "$conf"
fi
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties \
  -cp "$classpath" kafka.Kafka "$conf"
