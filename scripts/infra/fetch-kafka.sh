#!/usr/bin/env bash
# Ensure the Apache Kafka jars (broker + runtime deps + a logging binding) are in a cache
# OUTSIDE the clone, so a fresh CI clone reuses them and a fresh machine still gets them.
# Usage: scripts/infra/fetch-kafka.sh [version]   (env: POSTMESH_CACHE, KAFKA_VERSION)
# Prints the libs dir as the last line of stdout.
set -euo pipefail

version="${1:-${KAFKA_VERSION:-3.9.1}}"
cache="${POSTMESH_CACHE:-$HOME/.cache/postmesh}"
dest="$cache/kafka/$version"
libs="$dest/libs"
marker="$dest/.complete"

# Fast path: the marker is written only after every jar is in place.
if [[ -f "$marker" ]]; then
  echo "$libs"
  exit 0
fi

# Fail fast with a clear message instead of a confusing error (or hang) later.
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch-kafka: '$tool' not found on PATH; install a JDK 17+ and Maven (e.g. apt-get install openjdk-17-jdk-headless maven)" >&2
    exit 1
  fi
done

mkdir -p "$cache/kafka"
# Serialise concurrent fetches of the same version (e.g. parallel CI jobs); the loser
# then finds the marker and returns at once.
exec 9>"$cache/kafka/.lock-$version"
flock 9
if [[ -f "$marker" ]]; then
  echo "$libs"
  exit 0
fi

# Build in a private temp dir next to the destination, then rename: a concurrent or
# interrupted run never leaves a half-filled libs dir behind the marker.
work="$(mktemp -d "$cache/kafka/.tmp-$version.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Kafka 4.x switched to log4j2; 3.x uses reload4j through slf4j.
case "$version" in
  3.*) binding='<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>' ;;
  *)   binding='<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency><dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>' ;;
esac

# A throwaway pom whose only job is to name the artifacts; copy-dependencies resolves the
# transitive runtime closure (zookeeper-free KRaft still needs e.g. kafka-metadata, raft).
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>postmesh.infra</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    $binding
  </dependencies>
</project>
POM

# -B: batch mode, never prompts; stdin from /dev/null so it cannot wait for input.
mvn -B -q -f "$work/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$work/libs" </dev/null >&2

# Sanity check before publishing: the broker jar must be there.
if [[ ! -f "$work/libs/kafka_2.13-$version.jar" ]]; then
  echo "fetch-kafka: kafka_2.13-$version.jar missing after Maven resolution" >&2
  exit 1
fi

mkdir -p "$dest"
rm -rf "$libs"
mv "$work/libs" "$libs"
touch "$marker"
echo "$libs"
