#!/usr/bin/env bash
# Single-node Apache Kafka 4.x (KRaft, combined broker+controller) on 127.0.0.1 for
# local development and CI, built from Apache's jars on Maven Central (via mvn).
#
# Usage: scripts/kafka.sh <command> [args]
#   install                 fetch the jars into the cache (idempotent)
#   start                   install if needed, format storage if needed, start the broker
#                           in the background, wait until it answers, create the topics
#                           (no-op if it is already running)
#   stop                    stop the broker started by this script (no-op if not running)
#   status                  print state; exit 0 if running, 3 if not
#   reset                   stop and wipe the data dir (next start re-formats)
#   tool <main-class> [args...]   run any Kafka tool class with the Kafka classpath, e.g.
#                           tool org.apache.kafka.tools.ProducerPerformance --topic t ...
#   topics [args...]        org.apache.kafka.tools.TopicCommand; --bootstrap-server is
#                           added unless given, e.g. `topics --list`
#   fresh-topic NAME PARTITIONS   (re)create topic NAME empty, waiting out the deletion of an
#                           older one of that name
#   bootstrap               print the bootstrap address (127.0.0.1:$KAFKA_PORT)
#   security                print, as `export NAME=VALUE` lines, how to reach the secured
#                           listeners: KAFKA_TLS_BOOTSTRAP, KAFKA_SCRAM_BOOTSTRAP,
#                           KAFKA_CLUSTER_CA, KAFKA_USER_CERT, KAFKA_USER_KEY,
#                           KAFKA_SCRAM_USERNAME, KAFKA_SCRAM_PASSWORD_FILE
#   logs [N]                print the last N (default 100) lines of the broker log
#
# Environment:
#   KAFKA_VERSION (4.1.1)   KAFKA_PORT (9094)   KAFKA_CONTROLLER_PORT (9095)
#   KAFKA_TOPICS ("user_events transaction_events")   KAFKA_TOPIC_PARTITIONS (6)
#   KAFKA_START_TIMEOUT (60 s)   KAFKA_STOP_TIMEOUT (60 s)
#   KAFKA_HEAP_OPTS ("-Xms256m -Xmx1g")   KAFKA_OPTS (extra broker JVM options)
#   KAFKA_POD_LISTENER (none): ADDRESS:PORT=HOST:PORT adds a listener on ADDRESS:PORT that
#     advertises HOST:PORT, for clients in pods that know the broker by a Service's DNS name
#     (scripts/cluster-test: 10.244.0.1:9092=streamflow-kafka-bootstrap.streamflow.svc:9092)
#   KAFKA_POD_SCRAM_LISTENER (none): the same, for a SCRAM listener (SASL_SSL, as the SCRAM
#     listener below) for pods; the broker's certificate then names HOST too
#   KAFKA_TLS_PORT (KAFKA_PORT+100)   KAFKA_SCRAM_PORT (KAFKA_PORT+101): the secured listeners,
#     always on beside the plaintext one, as a Strimzi cluster has them: TLS (mutual TLS, a
#     client certificate signed by the clients CA required) and SCRAM (SASL_SSL with
#     SCRAM-SHA-512, user KAFKA_SCRAM_USER (streamflow)). Certificates (a cluster CA that signs
#     the broker's, for 127.0.0.1 and localhost; a clients CA that signs the user's) and the
#     user's password are made by openssl in $STREAMFLOW_RUN_DIR/kafka/tls.
#   KAFKA_TOOL_HEAP_OPTS ("-Xmx512m")   KAFKA_TOOL_OPTS (extra tool JVM options)
#   STREAMFLOW_CACHE (~/.cache/streamflow): jars in $STREAMFLOW_CACHE/kafka/<version>/lib
#   STREAMFLOW_RUN_DIR ($STREAMFLOW_CACHE/run): state in $STREAMFLOW_RUN_DIR/kafka
#   JAVA_HOME (java on PATH; Java 17+ required)   MVN (mvn)   MVN_ARGS (extra mvn args)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=kafka

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
SCALA_BINARY_VERSION="2.13"
KAFKA_HOST="127.0.0.1"
KAFKA_PORT="${KAFKA_PORT:-9094}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9095}"
KAFKA_TOPICS="${KAFKA_TOPICS-user_events transaction_events}"
KAFKA_TOPIC_PARTITIONS="${KAFKA_TOPIC_PARTITIONS:-6}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-60}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_TOOL_HEAP_OPTS="${KAFKA_TOOL_HEAP_OPTS:--Xmx512m}"
MVN="${MVN:-mvn}"
MVN_DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

KAFKA_HOME="$(sf_cache_dir)/kafka/$KAFKA_VERSION"
LIB_DIR="$KAFKA_HOME/lib"
RUN_DIR="$(sf_run_dir kafka)"
CONF_DIR="$RUN_DIR/config"
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/logs"
LOG_FILE="$LOG_DIR/server.log"
PID_FILE="$RUN_DIR/kafka.pid"
SERVER_PROPS="$CONF_DIR/server.properties"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_POD_LISTENER="${KAFKA_POD_LISTENER:-}"
[[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number, got '$KAFKA_PORT'"
KAFKA_TLS_PORT="${KAFKA_TLS_PORT:-$((KAFKA_PORT + 100))}"
KAFKA_SCRAM_PORT="${KAFKA_SCRAM_PORT:-$((KAFKA_PORT + 101))}"
KAFKA_SCRAM_USER="${KAFKA_SCRAM_USER:-streamflow}"
TLS_DIR="$RUN_DIR/tls"
LISTENERS="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
LISTENERS+=",TLS://$KAFKA_HOST:$KAFKA_TLS_PORT,SCRAM://$KAFKA_HOST:$KAFKA_SCRAM_PORT"
ADVERTISED="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT"
ADVERTISED+=",TLS://$KAFKA_HOST:$KAFKA_TLS_PORT,SCRAM://$KAFKA_HOST:$KAFKA_SCRAM_PORT"
PROTOCOLS="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,TLS:SSL,SCRAM:SASL_SSL"
# The names the broker's certificate holds: a client checks the one it connected to.
TLS_SANS="IP:127.0.0.1,DNS:localhost"
KAFKA_POD_SCRAM_LISTENER="${KAFKA_POD_SCRAM_LISTENER:-}"
if [[ -n "$KAFKA_POD_LISTENER" ]]; then
  [[ "$KAFKA_POD_LISTENER" =~ ^([0-9.]+:[0-9]+)=([A-Za-z0-9.-]+:[0-9]+)$ ]] ||
    die "KAFKA_POD_LISTENER must look like 10.244.0.1:9092=kafka.ns.svc:9092, got '$KAFKA_POD_LISTENER'"
  LISTENERS+=",PODS://${BASH_REMATCH[1]}"
  ADVERTISED+=",PODS://${BASH_REMATCH[2]}"
  PROTOCOLS+=",PODS:PLAINTEXT"
fi
if [[ -n "$KAFKA_POD_SCRAM_LISTENER" ]]; then
  [[ "$KAFKA_POD_SCRAM_LISTENER" =~ ^([0-9.]+:[0-9]+)=([A-Za-z0-9.-]+):([0-9]+)$ ]] ||
    die "KAFKA_POD_SCRAM_LISTENER must look like 10.244.0.1:9093=kafka.ns.svc:9093, got '$KAFKA_POD_SCRAM_LISTENER'"
  LISTENERS+=",PODSCRAM://${BASH_REMATCH[1]}"
  ADVERTISED+=",PODSCRAM://${BASH_REMATCH[2]}:${BASH_REMATCH[3]}"
  PROTOCOLS+=",PODSCRAM:SASL_SSL"
  TLS_SANS+=",DNS:${BASH_REMATCH[2]}"
fi

[[ "$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_CONTROLLER_PORT must be a number"
[[ "$KAFKA_TLS_PORT" =~ ^[0-9]+$ && "$KAFKA_SCRAM_PORT" =~ ^[0-9]+$ ]] ||
  die "KAFKA_TLS_PORT and KAFKA_SCRAM_PORT must be numbers"
[[ "$KAFKA_SCRAM_USER" =~ ^[A-Za-z0-9._-]+$ ]] || die "KAFKA_SCRAM_USER must be a plain name, got '$KAFKA_SCRAM_USER'"
[[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

# ---------------------------------------------------------------- helpers

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install Java 17+ or set JAVA_HOME)"
  local spec
  spec="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -n1)"
  [[ "$spec" =~ ^[0-9]+$ ]] || die "cannot determine the Java version of $JAVA"
  ((spec >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is Java $spec"
}

is_installed() { [[ -f "$LIB_DIR/.complete" ]]; }

# Writes $2 to file $1 only if the content differs (atomic replace).
write_file() {
  local f="$1" content="$2"
  if [[ -f "$f" ]] && [[ "$(cat "$f")" == "$content" ]]; then return 0; fi
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$content" >"$f.tmp.$$"
  mv -f "$f.tmp.$$" "$f"
}

# Log4j2 config for short-lived tools: warnings only, on stderr (stdout stays clean).
tools_log4j_conf() {
  local f="$KAFKA_HOME/config/tools-log4j2.properties"
  write_file "$f" "status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR"
  printf '%s\n' "$f"
}

# ---------------------------------------------------------------- install

cmd_install() {
  if is_installed; then
    log "Kafka $KAFKA_VERSION already installed in $LIB_DIR"
    return 0
  fi
  check_java
  command -v "$MVN" >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  mkdir -p "$KAFKA_HOME"
  # Serialise concurrent installs of the same version.
  exec 8>"$KAFKA_HOME/.install.lock"
  flock -w 900 8 || die "timed out waiting for another install of Kafka $KAFKA_VERSION"
  if is_installed; then exec 8>&-; return 0; fi

  local started=$SECONDS mvn_log="$KAFKA_HOME/install.log" tmp="$KAFKA_HOME/lib.tmp"
  log "installing Kafka $KAFKA_VERSION jars from Maven into $LIB_DIR (log: $mvn_log)"
  cat >"$KAFKA_HOME/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by streamflow scripts/kafka.sh: resolves the Kafka $KAFKA_VERSION runtime. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamflow.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_BINARY_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-storage</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  rm -rf "$tmp"
  local mvn_cmd=("$MVN" -B -ntp -f "$KAFKA_HOME/pom.xml")
  # shellcheck disable=SC2206
  [[ -n "${MVN_ARGS:-}" ]] && mvn_cmd+=($MVN_ARGS)
  if ! "${mvn_cmd[@]}" "$MVN_DEP_PLUGIN:copy-dependencies" \
    -DoutputDirectory="$tmp" -DincludeScope=runtime >"$mvn_log" 2>&1; then
    tail -n 40 "$mvn_log" >&2
    die "mvn failed to resolve Kafka $KAFKA_VERSION (full log: $mvn_log)"
  fi

  # Kafka only depends on slf4j-api and log4j-core; add the matching slf4j->log4j2
  # binding (slf4j 1.x: log4j-slf4j-impl, 2.x: log4j-slf4j2-impl) so the broker logs.
  local jars=() core="" slf4j="" log4j_version binding="log4j-slf4j-impl" j
  jars=("$tmp"/*.jar)
  for j in "${jars[@]##*/}"; do
    case "$j" in
      log4j-core-*.jar) core="$j" ;;
      slf4j-api-*.jar) slf4j="$j" ;;
    esac
  done
  log4j_version="${core#log4j-core-}"
  log4j_version="${log4j_version%.jar}"
  [[ -n "$core" && -n "$log4j_version" ]] || die "no log4j-core jar among Kafka's dependencies"
  [[ "$slf4j" == slf4j-api-1.* ]] || binding="log4j-slf4j2-impl"
  if ! "${mvn_cmd[@]}" "$MVN_DEP_PLUGIN:copy" \
    -Dartifact="org.apache.logging.log4j:$binding:$log4j_version" \
    -DoutputDirectory="$tmp" >>"$mvn_log" 2>&1; then
    tail -n 40 "$mvn_log" >&2
    die "mvn failed to resolve $binding $log4j_version (full log: $mvn_log)"
  fi

  [[ -f "$tmp/kafka_$SCALA_BINARY_VERSION-$KAFKA_VERSION.jar" ]] || die "kafka jar missing after mvn"
  touch "$tmp/.complete"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  exec 8>&-
  jars=("$LIB_DIR"/*.jar)
  log "installed Kafka $KAFKA_VERSION (${#jars[@]} jars, $(du -sh "$LIB_DIR" | cut -f1)) in $((SECONDS - started))s"
}

# ---------------------------------------------------------------- config

write_configs() {
  mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR"
  write_file "$SERVER_PROPS" "# Generated by streamflow scripts/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=$LISTENERS
advertised.listeners=$ADVERTISED
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$PROTOCOLS
log.dirs=$DATA_DIR

# single node
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true

# Retention by size only (512 MiB per partition), never by time: tests and the demo produce
# events with fixed, past event times (the Kafka record timestamp), which a time limit would
# delete at the next retention check, under a running drain.
log.retention.ms=-1
log.retention.bytes=536870912
log.segment.bytes=67108864
log.retention.check.interval.ms=60000

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
socket.request.max.bytes=104857600

# The secured listeners (TLS, SCRAM), as a Strimzi cluster's: the broker's certificate is
# signed by the cluster CA, clients' by the clients CA (what the broker trusts).
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/clients-ca.crt
listener.name.tls.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.podscram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"

  write_file "$CONF_DIR/log4j2.properties" "status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN"
}

tls_files() {
  local f
  for f in cluster-ca.crt clients-ca.crt broker.pem user.crt user.key scram.password; do
    [[ -s "$TLS_DIR/$f" ]] || return 1
  done
}

# The files are there, name the broker as this configuration does, and do not expire soon.
tls_complete() {
  local f
  tls_files || return 1
  [[ "$(cat "$TLS_DIR/broker.sans" 2>/dev/null)" == "$TLS_SANS" ]] || return 1
  # Remade a month before anything expires.
  for f in cluster-ca.crt clients-ca.crt broker.crt user.crt; do
    openssl x509 -checkend 2592000 -noout -in "$TLS_DIR/$f" >/dev/null 2>&1 || return 1
  done
}

# Makes the secured listeners' certificates and the SCRAM user's password (idempotent): two
# CAs as Strimzi has them, the broker's certificate (127.0.0.1, localhost) and a user's.
make_tls() {
  command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
  tls_complete && return 0
  local tmp="$TLS_DIR.tmp.$$" out
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "making the TLS listener's certificates and the SCRAM user's password in $TLS_DIR"
  if ! out="$(cd "$tmp" && make_tls_files 2>&1)"; then
    printf '%s\n' "$out" >&2
    rm -rf "$tmp"
    die "making the certificates failed"
  fi
  rm -rf "$TLS_DIR"
  mv "$tmp" "$TLS_DIR"
}

# In the current directory: cluster-ca, clients-ca, broker and user .crt/.key, broker.pem (the
# broker's key and certificate, Kafka's PEM key store) and scram.password.
make_tls_files() {
  local ca
  for ca in cluster-ca clients-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/O=streamflow/CN=$ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$ca.key" -out "$ca.crt" || return 1
  done
  sign_cert broker "/O=streamflow/CN=127.0.0.1" cluster-ca \
    "subjectAltName=$TLS_SANS" "extendedKeyUsage=serverAuth" || return 1
  printf '%s\n' "$TLS_SANS" >broker.sans
  sign_cert user "/O=streamflow/CN=streamflow-tls" clients-ca "extendedKeyUsage=clientAuth" || return 1
  cat broker.key broker.crt >broker.pem
  openssl rand -hex 16 | tr -d '\n' >scram.password
  rm -f ./*.csr ./*.ext ./*.srl
}

# sign_cert NAME SUBJECT CA EXTENSION...: NAME.key and NAME.crt, signed by CA.key.
sign_cert() {
  local name="$1" subject="$2" ca="$3"
  shift 3
  printf '%s\n' "$@" >"$name.ext"
  openssl req -new -newkey rsa:2048 -nodes -subj "$subject" -keyout "$name.key" -out "$name.csr" &&
    openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 825 \
      -extfile "$name.ext" -out "$name.crt"
}

# The SCRAM-SHA-512 user of the SCRAM listener, with the password in $TLS_DIR (set on every
# start: idempotent, and a data directory formatted before the listener existed gets it too).
create_scram_user() {
  local out
  if ! out="$(TOOL_TIMEOUT=120 run_admin_tool kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
    --alter --entity-type users --entity-name "$KAFKA_SCRAM_USER" \
    --add-config "SCRAM-SHA-512=[iterations=4096,password=$(cat "$TLS_DIR/scram.password")]" \
    </dev/null 2>&1)"; then
    log "creating the SCRAM user $KAFKA_SCRAM_USER failed:"
    printf '%s\n' "$out" >&2
    return 1
  fi
  log "SCRAM-SHA-512 user $KAFKA_SCRAM_USER ready on $KAFKA_HOST:$KAFKA_SCRAM_PORT"
}

# Same format as `kafka-storage.sh random-uuid` (Uuid.randomUuid): 16 random bytes,
# URL-safe base64 without padding, never starting with '-'. Avoids a JVM start.
random_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ ${#id} -eq 22 && "$id" != -* && "$id" != AAAAAAAAAAAAAAAAAAAAA[AQ] ]] && break
  done
  printf '%s\n' "$id"
}

is_formatted() { [[ -f "$DATA_DIR/meta.properties" ]]; }

format_storage() {
  local cid_file="$RUN_DIR/cluster.id" cid out
  if [[ -s "$cid_file" ]]; then
    cid="$(cat "$cid_file")"
  else
    cid="$(random_cluster_id)"
    printf '%s\n' "$cid" >"$cid_file"
  fi
  log "formatting $DATA_DIR (cluster id $cid)"
  if ! out="$(run_admin_tool kafka.tools.StorageTool format -t "$cid" -c "$SERVER_PROPS" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "formatting the storage failed"
  fi
  log "$out"
}

# ---------------------------------------------------------------- process

broker_pid() { pidfile_pid "$PID_FILE" "$SERVER_PROPS"; }

run_java_tool() {
  local cls="$1"; shift
  local log4j
  log4j="$(tools_log4j_conf)"
  local prefix=()
  [[ -n "${TOOL_TIMEOUT:-}" ]] && prefix=(timeout "$TOOL_TIMEOUT")
  # shellcheck disable=SC2086
  "${prefix[@]}" "$JAVA" $KAFKA_TOOL_HEAP_OPTS ${KAFKA_TOOL_OPTS:-} -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$log4j" -cp "$LIB_DIR/*" "$cls" "$@"
}

# Short-lived admin commands: C1 JIT + serial GC start ~40% faster on 2 cores.
run_admin_tool() {
  KAFKA_TOOL_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC ${KAFKA_TOOL_OPTS:-}" run_java_tool "$@"
}

print_log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    log "last lines of $LOG_FILE:"
    tail -n 60 "$LOG_FILE" >&2
  fi
}

# Creates $KAFKA_TOPICS (in parallel, one TopicCommand JVM each) if they don't exist.
create_topics() {
  local t pids=() topics=() rc=0 i out_dir
  [[ -n "${KAFKA_TOPICS// /}" ]] || return 0
  out_dir="$(mktemp -d)"
  for t in $KAFKA_TOPICS; do
    TOOL_TIMEOUT=120 run_admin_tool org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$t" \
      --partitions "$KAFKA_TOPIC_PARTITIONS" --replication-factor 1 \
      </dev/null >"$out_dir/$t.log" 2>&1 &
    pids+=("$!")
    topics+=("$t")
  done
  for i in "${!pids[@]}"; do
    t="${topics[$i]}"
    if wait "${pids[$i]}"; then
      log "topic $t ready"
    else
      rc=1
      log "creating topic $t failed:"
      cat "$out_dir/$t.log" >&2
    fi
  done
  rm -rf "$out_dir"
  return "$rc"
}

cmd_start() {
  exec 9>"$RUN_DIR/.lock"
  flock -w 180 9 || die "another start/stop is in progress (lock $RUN_DIR/.lock)"

  local pid
  if pid="$(broker_pid)"; then
    if tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      log "already running (pid $pid) on $BOOTSTRAP"
      tcp_open "$KAFKA_HOST" "$KAFKA_TLS_PORT" ||
        log "WARNING: it has no TLS listener on $KAFKA_HOST:$KAFKA_TLS_PORT (started by an older scripts/kafka.sh): \`$0 restart\` adds the secured listeners"
      return 0
    fi
    log "pid $pid is alive but $BOOTSTRAP does not answer yet; waiting"
    if ! wait_for_tcp "$KAFKA_HOST" "$KAFKA_PORT" "$KAFKA_START_TIMEOUT" "$pid"; then
      print_log_tail
      die "broker pid $pid does not answer on $BOOTSTRAP (try: $0 stop)"
    fi
    log "running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  rm -f "$PID_FILE"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_TLS_PORT" "$KAFKA_SCRAM_PORT"; do
    if tcp_open "$KAFKA_HOST" "$p"; then
      die "port $KAFKA_HOST:$p is already in use by a process this script did not start"
    fi
  done

  cmd_install
  check_java
  make_tls
  write_configs
  is_formatted || format_storage

  if [[ -f "$LOG_FILE" ]]; then mv -f "$LOG_FILE" "$LOG_FILE.prev"; fi
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, log $LOG_FILE)"
  local started=$SECONDS
  # setsid: own session, so Ctrl-C / the caller's process group does not reach it.
  # The inner bash records its pid and then execs java, so the pid file holds java's pid.
  # shellcheck disable=SC2086,SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    "$JAVA" $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$CONF_DIR/log4j2.properties" \
    ${KAFKA_OPTS:-} -cp "$LIB_DIR/*" kafka.Kafka "$SERVER_PROPS" \
    </dev/null >>"$LOG_FILE" 2>&1 9>&- &

  local i
  for ((i = 0; i < 50; i++)); do
    pid="$(head -n1 "$PID_FILE" 2>/dev/null | tr -dc '0-9')" || true
    [[ -n "$pid" ]] && break
    sleep 0.1
  done
  [[ -n "$pid" ]] || die "broker did not record its pid in $PID_FILE"

  if ! wait_for_tcp "$KAFKA_HOST" "$KAFKA_PORT" "$KAFKA_START_TIMEOUT" "$pid"; then
    print_log_tail
    if pid_alive "$pid"; then
      log "broker did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s; stopping it"
      stop_pidfile "$PID_FILE" 20 "$SERVER_PROPS" || true
    else
      rm -f "$PID_FILE"
      log "broker process exited during startup"
    fi
    die "Kafka failed to start"
  fi
  log "broker pid $pid listening on $BOOTSTRAP after $((SECONDS - started))s"

  if ! create_topics || ! create_scram_user; then
    print_log_tail
    log "topic or user creation failed; stopping the broker"
    stop_pidfile "$PID_FILE" "$KAFKA_STOP_TIMEOUT" "$SERVER_PROPS" || true
    die "Kafka failed to start"
  fi
  log "Kafka ready on $BOOTSTRAP in $((SECONDS - started))s"
}

cmd_stop() {
  exec 9>"$RUN_DIR/.lock"
  flock -w 180 9 || die "another start/stop is in progress (lock $RUN_DIR/.lock)"
  if ! broker_pid >/dev/null; then
    log "not running"
    rm -f "$PID_FILE"
    return 0
  fi
  stop_pidfile "$PID_FILE" "$KAFKA_STOP_TIMEOUT" "$SERVER_PROPS" || die "could not stop the broker"
  log "stopped"
}

cmd_status() {
  local pid
  if pid="$(broker_pid)"; then
    if tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      echo "running: pid $pid, bootstrap $BOOTSTRAP, Kafka $KAFKA_VERSION, state $RUN_DIR"
    else
      echo "starting (not answering yet): pid $pid, bootstrap $BOOTSTRAP, state $RUN_DIR"
    fi
    return 0
  fi
  echo "stopped (Kafka $KAFKA_VERSION $(is_installed && echo installed || echo 'not installed'), state $RUN_DIR)"
  return 3
}

cmd_reset() {
  cmd_stop
  log "wiping $DATA_DIR and $LOG_DIR"
  rm -rf -- "$DATA_DIR" "$LOG_DIR" "$RUN_DIR/cluster.id"
}

cmd_tool() {
  [[ $# -ge 1 ]] || die "usage: $0 tool <main-class> [args...]"
  is_installed || cmd_install
  check_java
  local cls="$1"; shift
  run_java_tool "$cls" "$@"
}

cmd_topics() {
  local a
  for a in "$@"; do
    if [[ "$a" == --bootstrap-server || "$a" == --bootstrap-server=* || "$a" == --bootstrap-controller* ]]; then
      is_installed || cmd_install
      check_java
      run_admin_tool org.apache.kafka.tools.TopicCommand "$@"
      return
    fi
  done
  is_installed || cmd_install
  check_java
  run_admin_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@"
}

# A topic NAME of PARTITIONS partitions holding nothing yet: deleted first if it exists. The
# broker deletes a topic after it answers, and refuses to create the name until then, so the
# creation is tried again until it succeeds, for up to KAFKA_START_TIMEOUT.
cmd_fresh_topic() {
  (($# == 2)) || die "usage: $0 fresh-topic NAME PARTITIONS"
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  cmd_topics --delete --if-exists --topic "$1" >/dev/null 2>&1 || true
  until cmd_topics --create --topic "$1" --partitions "$2" --replication-factor 1 \
    >/dev/null 2>"$LOG_DIR/fresh-topic.log"; do
    ((SECONDS < deadline)) || die "creating topic $1 failed: $(tail -n 3 "$LOG_DIR/fresh-topic.log")"
    sleep 0.5
  done
}

cmd_security() {
  tls_files || die "no certificates in $TLS_DIR yet: \`$0 start\` makes them"
  tcp_open "$KAFKA_HOST" "$KAFKA_TLS_PORT" ||
    die "no TLS listener on $KAFKA_HOST:$KAFKA_TLS_PORT: \`$0 start\` (or \`$0 restart\`, for a broker an older scripts/kafka.sh started)"
  cat <<EOF
export KAFKA_TLS_BOOTSTRAP=$KAFKA_HOST:$KAFKA_TLS_PORT
export KAFKA_SCRAM_BOOTSTRAP=$KAFKA_HOST:$KAFKA_SCRAM_PORT
export KAFKA_CLUSTER_CA=$TLS_DIR/cluster-ca.crt
export KAFKA_USER_CERT=$TLS_DIR/user.crt
export KAFKA_USER_KEY=$TLS_DIR/user.key
export KAFKA_SCRAM_USERNAME=$KAFKA_SCRAM_USER
export KAFKA_SCRAM_PASSWORD_FILE=$TLS_DIR/scram.password
EOF
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    tool) cmd_tool "$@" ;;
    topics) cmd_topics "$@" ;;
    fresh-topic) cmd_fresh_topic "$@" ;;
    bootstrap) echo "$BOOTSTRAP" ;;
    security) cmd_security ;;
    logs) tail -n "${1:-100}" "$LOG_FILE" ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 ;;
  esac
}

main "$@"
