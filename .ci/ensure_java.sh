#!/usr/bin/env bash
# Make sure a Java 17+ runtime is on PATH (Spark 4 needs it); install it with apt-get if not.
set -euo pipefail
if command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; then
  exit 0
fi
echo "Java 17 not found: installing openjdk-17-jre-headless with apt-get" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
java -version
