#!/usr/bin/env bash
# Runs a real single-node Apache Kafka broker (KRaft, combined
# broker+controller) for tests and benchmarks, from jars fetched off Maven
# Central. No Docker, no Kafka tarball download.
#
#   scripts/kafka.sh fetch
#   scripts/kafka.sh start [--dir DIR] [--port PORT] [--sasl] [--set KEY=VALUE]...
#   scripts/kafka.sh stop  --dir DIR [--purge]
#   scripts/kafka.sh kill  --dir DIR
#   scripts/kafka.sh status --dir DIR
#   scripts/kafka.sh env   --dir DIR
#   scripts/kafka.sh topics (--brokers B | --dir DIR) create NAME PARTITIONS [compact]
#   scripts/kafka.sh topics (--brokers B | --dir DIR) list|describe [NAME]|delete NAME
#   scripts/kafka.sh tool CLASS [ARGS...]      # any Kafka tool main class
#
# `start` prints shell-evalable lines on stdout (KAFKA_DIR, KAFKA_BROKERS and,
# with --sasl, KAFKA_SASL_BROKERS); everything else goes to stderr:
#   eval "$(scripts/kafka.sh start)"
#
# Environment:
#   KAFKA_VERSION        Kafka version to fetch (default below)
#   KAFKA_HEAP_OPTS      broker heap flags (default -Xms256m -Xmx1g)
#   KAFKA_START_TIMEOUT  seconds to wait for the broker (default 60)
#   KAFKA_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL (default 30)
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="$ROOT/.cache/kafka"
LIBS="$CACHE/libs"
STAMP="$LIBS/.fetched-$KAFKA_VERSION"
SUPPORT="$SCRIPT_DIR/kafka"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

# SASL users: name password (the same pairs for PLAIN and both SCRAM variants).
SASL_USERS=("vigil vigil-secret" "admin admin-secret")

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- java / mvn

JAVA=""

java_major() { # prints the major version of the given java binary
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  [[ -n "$v" ]] || { echo 0; return; }
  if [[ "$v" == 1.* ]]; then v="${v#1.}"; fi
  echo "${v%%[.+-]*}"
}

find_java() {
  local c
  for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" \
           /usr/lib/jvm/java-17-openjdk-*/bin/java /usr/lib/jvm/*/bin/java; do
    [[ -n "$c" && -x "$c" ]] || continue
    if (( $(java_major "$c") >= 17 )); then JAVA="$c"; return 0; fi
  done
  return 1
}

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  log "installing $* with apt-get"
  # Debian after bookworm has no openjdk-17; any 17+ JRE runs the broker.
  apt-get update -qq >&2
  local pkgs=() p
  for p in "$@"; do
    if [[ "$p" == openjdk-17-jre-headless ]] && ! apt-cache show "$p" >/dev/null 2>&1; then
      p=default-jre-headless
    fi
    pkgs+=("$p")
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
}

ensure_java() {
  [[ -n "$JAVA" ]] && return 0
  find_java && return 0
  apt_install openjdk-17-jre-headless
  find_java || die "no Java 17+ found after installing it"
}

ensure_mvn() {
  command -v mvn >/dev/null && return 0
  apt_install maven
}

# ---------------------------------------------------------------- fetch

fetched() { [[ -f "$STAMP" ]]; }

cmd_fetch() {
  ensure_java
  fetched && return 0
  ensure_mvn
  mkdir -p "$CACHE"
  # Parallel test runs may all call fetch; one downloads, the others wait.
  (
    flock 9
    fetched && exit 0
    log "fetching Apache Kafka $KAFKA_VERSION and its dependencies from Maven Central"
    tmp="$CACHE/libs.tmp.$$"
    rm -rf "$tmp"
    # JAVA_HOME steers mvn to the same Java we run the broker with.
    JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVA")")")" \
      mvn -q -B -Dstyle.color=never -f "$SUPPORT/pom.xml" \
        -Dkafka.version="$KAFKA_VERSION" \
        -DincludeScope=runtime \
        -DoutputDirectory="$tmp" \
        dependency:copy-dependencies 2>&1 \
      | sed 's/\x1b\[[0-9;]*m//g' | grep -v '^[[:space:]]*$' >&2 \
      || [[ "${PIPESTATUS[0]}" == 0 ]] \
      || { rm -rf "$tmp"; die "maven could not fetch Kafka $KAFKA_VERSION"; }
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] \
      || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"; }
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    train_cds || log "warning: no class-data archive; brokers will start slower"
    date -u +%FT%TZ > "$STAMP"
    log "Kafka $KAFKA_VERSION ready in $LIBS"
  ) 9>"$CACHE/.fetch.lock"
}

# A JVM spends most of a broker start loading and verifying classes on a
# 2-core machine. One training run dumps the classes it loaded into AppCDS
# archives (broker.jsa, tools.jsa); later starts map them and come up about
# twice as fast. Best effort: without archives everything still works.
train_cds() {
  local broker_jsa="$LIBS/broker.jsa" tools_jsa="$LIBS/tools.jsa" ok=0
  rm -f "$broker_jsa" "$tools_jsa" "$LIBS/cds.java"
  log "training class-data archives with a throwaway broker"
  DIR="$(mktemp -d "$CACHE/cds-training.XXXXXX")"
  PORT="" SASL=0
  init_dir
  if launch_broker -XX:ArchiveClassesAtExit="$broker_jsa.tmp" && wait_ready; then
    TOOL_JVM=(-XX:ArchiveClassesAtExit="$tools_jsa.tmp")
    run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" \
      --create --topic cds-training --partitions 1 --replication-factor 1 >/dev/null 2>&1 || true
    TOOL_JVM=()
    # The archive is written at a clean exit, so stop with SIGTERM and wait.
    terminate 60 || true
    if [[ -s "$broker_jsa.tmp" ]]; then mv "$broker_jsa.tmp" "$broker_jsa"; ok=1; fi
    readlink -f "$JAVA" > "$LIBS/cds.java"
    if [[ -s "$tools_jsa.tmp" ]]; then mv "$tools_jsa.tmp" "$tools_jsa"; fi
  fi
  rm -f "$broker_jsa.tmp" "$tools_jsa.tmp"
  release_ports "$DIR"
  rm -rf "$DIR"
  DIR="" PORT="" CONTROLLER_PORT="" SASL_PORT="" CLUSTER_ID=""
  (( ok ))
}

TOOL_JVM=()

# True when the archive $1 exists and was dumped by the Java we run now (an
# archive from another JVM build is refused with a warning on every start).
cds_usable() {
  [[ -f "$1" && -f "$LIBS/cds.java" && "$(cat "$LIBS/cds.java")" == "$(readlink -f "$JAVA")" ]]
}

# Runs a Kafka tool class with quiet logging; JVM warnings go to stderr so
# the tool's stdout stays clean.
run_tool() {
  local class="$1"; shift
  local cds=()
  if (( ${#TOOL_JVM[@]} == 0 )) && cds_usable "$LIBS/tools.jsa"; then
    cds=(-XX:SharedArchiveFile="$LIBS/tools.jsa")
  fi
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Xlog:disable -Xlog:all=warning:stderr \
    ${cds[@]+"${cds[@]}"} ${TOOL_JVM[@]+"${TOOL_JVM[@]}"} \
    -Dlog4j2.configurationFile="$SUPPORT/log4j2-tools.properties" \
    -cp "$LIBS/*" "$class" "$@"
}

# ---------------------------------------------------------------- ports

port_open() { # true when something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Picks a free port below the kernel's ephemeral range (so outgoing
# connections never take it later) and records it under $CACHE/ports, so
# concurrent runs never hand out the same port and a stopped broker keeps
# its port for a restart. A reservation is dropped when its DIR is gone.
reserve_port() {
  local dir="$1" low hi p i owner
  mkdir -p "$CACHE/ports"
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  hi=$(( low - 1 )); (( hi > 20000 )) || hi=29999
  (
    flock 9
    for (( i = 0; i < 500; i++ )); do
      p=$(( 15000 + (RANDOM * 32768 + RANDOM) % (hi - 15000) ))
      if [[ -f "$CACHE/ports/$p" ]]; then
        owner="$(cat "$CACHE/ports/$p" 2>/dev/null || true)"
        [[ -n "$owner" && -d "$owner" ]] && continue
      fi
      port_open "$p" && continue
      printf '%s\n' "$dir" > "$CACHE/ports/$p"
      echo "$p"
      exit 0
    done
    exit 1
  ) 9>"$CACHE/.ports.lock" || die "no free port found"
}

release_ports() {
  local dir="$1" f
  [[ -d "$CACHE/ports" ]] || return 0
  for f in "$CACHE/ports"/*; do
    [[ -f "$f" && "$(cat "$f" 2>/dev/null)" == "$dir" ]] && rm -f "$f"
  done
  return 0
}

# ---------------------------------------------------------------- run dir

DIR=""
PORT=""
SASL=0
PURGE=0
BROKERS=""
SETS=()
ARGS=()

parse_opts() {
  while (( $# )); do
    case "$1" in
      --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) DIR="${1#*=}"; shift ;;
      --port) PORT="${2:?--port needs a value}"; shift 2 ;;
      --port=*) PORT="${1#*=}"; shift ;;
      --sasl) SASL=1; shift ;;
      --purge) PURGE=1; shift ;;
      --brokers|--bootstrap-server) BROKERS="${2:?$1 needs a value}"; shift 2 ;;
      --brokers=*|--bootstrap-server=*) BROKERS="${1#*=}"; shift ;;
      --set) SETS+=("${2:?--set needs KEY=VALUE}"); shift 2 ;;
      --set=*) SETS+=("${1#*=}"); shift ;;
      -h|--help) usage ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
  if [[ -n "$PORT" && ! "$PORT" =~ ^[0-9]+$ ]]; then die "--port must be a number"; fi
  return 0
}

need_dir() {
  [[ -n "$DIR" ]] || die "--dir DIR is required"
  [[ -d "$DIR" ]] || die "no such run dir: $DIR"
  DIR="$(cd "$DIR" && pwd)"
  [[ -f "$DIR/broker.env" ]] || die "$DIR is not a kafka.sh run dir (no broker.env)"
}

# Loads PORT, CONTROLLER_PORT, SASL_PORT, CLUSTER_ID from broker.env.
load_env() {
  local saved_port="" k v
  while IFS='=' read -r k v; do
    case "$k" in
      PORT) saved_port="$v" ;;
      CONTROLLER_PORT) CONTROLLER_PORT="$v" ;;
      SASL_PORT) SASL_PORT="$v" ;;
      CLUSTER_ID) CLUSTER_ID="$v" ;;
    esac
  done < "$DIR/broker.env"
  if [[ -n "$PORT" && "$PORT" != "$saved_port" ]]; then
    die "$DIR was created with port $saved_port, not $PORT"
  fi
  PORT="$saved_port"
}

alive() { # whether process $1 exists and is not a zombie
  local state
  state="$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null || echo Z)"
  [[ "$state" != Z ]]
}

broker_pid() { # prints the pid if this dir's broker runs
  local pid
  [[ -f "$DIR/pid" ]] || return 1
  pid="$(cat "$DIR/pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  # A pid can be reused: make sure it is this dir's broker, and not a zombie.
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/server.properties" || return 1
  alive "$pid" || return 1
  echo "$pid"
}

print_env() {
  printf 'KAFKA_DIR=%q\n' "$DIR"
  printf 'KAFKA_BROKERS=%q\n' "127.0.0.1:$PORT"
  if [[ -n "$SASL_PORT" ]]; then
    printf 'KAFKA_SASL_BROKERS=%q\n' "127.0.0.1:$SASL_PORT"
  fi
}

write_config() {
  local listeners advertised protomap
  listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  advertised="PLAINTEXT://127.0.0.1:$PORT"
  protomap="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ -n "$SASL_PORT" ]]; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    advertised+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    protomap+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
  fi
  {
    cat <<EOF
# Written by scripts/kafka.sh. Single-node KRaft, tuned for tests on a small machine.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protomap
log.dirs=$DIR/data

# One broker: every internal topic must live with replication factor 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: creating 50 of each costs seconds on 2 cores.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
share.coordinator.state.topic.num.partitions=5

# Tests must not wait for rebalances or pre-create topics.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.partitions=1
delete.topic.enable=true

# After a SIGKILL the restarted broker cannot register until the old
# session expires (default 9 s); recovery tests kill and restart often.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000

# The default 128 MiB compaction buffer would eat a small heap.
log.cleaner.dedupe.buffer.size=33554432
EOF
    if [[ -n "$SASL_PORT" ]]; then
      local plain="" u
      for u in "${SASL_USERS[@]}"; do plain+=" user_${u%% *}=\"${u#* }\""; done
      cat <<EOF

# SASL for clients only; brokers and controller talk PLAINTEXT.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain;
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    fi
  } > "$DIR/server.properties"
}

apply_sets() { # --set KEY=VALUE replaces or adds a broker setting
  local kv k tmp
  for kv in ${SETS[@]+"${SETS[@]}"}; do
    [[ "$kv" == *=* ]] || die "--set needs KEY=VALUE, got: $kv"
    k="${kv%%=*}"
    tmp="$DIR/server.properties.tmp"
    awk -v k="$k" -F= '$1 == k { next } { print }' "$DIR/server.properties" > "$tmp"
    printf '%s\n' "$kv" >> "$tmp"
    mv "$tmp" "$DIR/server.properties"
  done
}

format_storage() {
  [[ -f "$DIR/data/meta.properties" ]] && return 0
  local args=(format --config "$DIR/server.properties" --cluster-id "$CLUSTER_ID" --ignore-formatted)
  if [[ -n "$SASL_PORT" ]]; then
    local u m
    for u in "${SASL_USERS[@]}"; do
      for m in SCRAM-SHA-256 SCRAM-SHA-512; do
        args+=(--add-scram "$m=[name=${u%% *},password=${u#* }]")
      done
    done
  fi
  log "formatting KRaft storage in $DIR/data"
  local out
  out="$(run_tool kafka.tools.StorageTool "${args[@]}" 2>&1)" \
    || { printf '%s\n' "$out" >&2; die "formatting storage in $DIR failed"; }
}

# Sends a Kafka ApiVersions v0 request; true when a broker answers it.
# Needs no JVM, and SASL listeners answer it before authentication too.
api_versions_ok() {
  local out
  # shellcheck disable=SC2016 # $1 belongs to the inner shell
  out="$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\xff\xff" >&3
    head -c 10 <&3 | od -An -tx1 | tr -s " \n" "  "
  ' _ "$1" 2>/dev/null)" || return 1
  # bytes 4..7: correlation id 7; bytes 8..9: error code 0.
  [[ "$out" =~ 00\ 00\ 00\ 07\ 00\ 00\ *$ ]]
}

log_tail() {
  log "---- last lines of $DIR/logs/server.log ----"
  tail -n 60 "$DIR/logs/server.log" >&2 2>/dev/null || true
  if [[ -s "$DIR/logs/stdout.log" ]]; then
    log "---- $DIR/logs/stdout.log ----"
    tail -n 30 "$DIR/logs/stdout.log" >&2 || true
  fi
}

# Sets up a new run dir: ports, config, formatted storage.
init_dir() {
  [[ -z "$(ls -A "$DIR")" ]] || die "$DIR is not empty and not a kafka.sh run dir"
  CONTROLLER_PORT="" SASL_PORT=""
  if [[ -n "$PORT" ]]; then
    mkdir -p "$CACHE/ports"
    printf '%s\n' "$DIR" > "$CACHE/ports/$PORT" # keep random picks off it
  else
    PORT="$(reserve_port "$DIR")"
  fi
  CONTROLLER_PORT="$(reserve_port "$DIR")"
  if (( SASL )); then SASL_PORT="$(reserve_port "$DIR")"; fi
  # A KRaft cluster id is 16 random bytes in URL-safe base64. One in 64
  # starts with `-`, which the format command's parser takes for an option:
  # drawn again, as Kafka's own Uuid.randomUuid does.
  CLUSTER_ID="-"
  while [[ "$CLUSTER_ID" == -* ]]; do
    CLUSTER_ID="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  mkdir -p "$DIR/logs" "$DIR/data"
  write_config
  # broker.env first: it marks the dir as ours, so a dir whose format
  # failed can still be purged, or formatted by the next start.
  printf 'PORT=%s\nCONTROLLER_PORT=%s\nSASL_PORT=%s\nCLUSTER_ID=%s\nKAFKA_VERSION=%s\n' \
    "$PORT" "$CONTROLLER_PORT" "$SASL_PORT" "$CLUSTER_ID" "$KAFKA_VERSION" > "$DIR/broker.env.tmp"
  mv "$DIR/broker.env.tmp" "$DIR/broker.env"
  echo "$PORT" > "$DIR/port"
  echo "$CONTROLLER_PORT" > "$DIR/controller_port"
  if [[ -n "$SASL_PORT" ]]; then echo "$SASL_PORT" > "$DIR/sasl_port"; fi
  format_storage
}

PID=""
LOG_OFFSET=0

# Starts the broker of $DIR in the background; extra JVM flags as arguments.
launch_broker() {
  local p
  for p in "$PORT" "$CONTROLLER_PORT" ${SASL_PORT:+"$SASL_PORT"}; do
    if port_open "$p"; then log "port $p is already taken by another process"; return 1; fi
  done
  mkdir -p "$DIR/logs"
  # Only look at log lines written by this start.
  LOG_OFFSET=0
  if [[ -f "$DIR/logs/server.log" ]]; then LOG_OFFSET="$(stat -c %s "$DIR/logs/server.log")"; fi

  local heap="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}" cds=()
  if (( $# == 0 )) && cds_usable "$LIBS/broker.jsa"; then
    cds=(-XX:SharedArchiveFile="$LIBS/broker.jsa")
  fi
  # shellcheck disable=SC2086 # heap flags are a word list
  (
    cd "$DIR"
    # setsid: the broker must outlive this script and not get signals sent
    # to the caller's process group. All output goes to files, and no lock
    # fd is inherited, so a caller reading our stdout is not kept waiting.
    exec setsid nohup "$JAVA" $heap \
      -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      ${cds[@]+"${cds[@]}"} "$@" \
      -Dkafka.logs.dir="$DIR/logs" \
      -Dlog4j2.configurationFile="$SUPPORT/log4j2-broker.properties" \
      -cp "$LIBS/*" kafka.Kafka "$DIR/server.properties" \
      </dev/null >>"$DIR/logs/stdout.log" 2>&1 9>&-
  ) &
  PID=$!
  echo "$PID" > "$DIR/pid"
  log "started broker pid $PID in $DIR, waiting for 127.0.0.1:$PORT"
}

# Waits until the broker logged its start and answers Kafka requests on
# every client listener. On failure kills it and shows the log.
wait_ready() {
  local deadline=$(( SECONDS + START_TIMEOUT )) started=0 size
  while (( SECONDS < deadline )); do
    # $PID is our own child: until it has exec'd Java its command line is
    # still this script's, so only its liveness says anything here.
    if ! alive "$PID"; then
      log "broker exited during startup"
      log_tail
      rm -f "$DIR/pid"
      return 1
    fi
    if (( ! started )) && [[ -f "$DIR/logs/server.log" ]]; then
      size="$(stat -c %s "$DIR/logs/server.log")"
      (( size >= LOG_OFFSET )) || LOG_OFFSET=0 # the log rolled over
      if tail -c +"$(( LOG_OFFSET + 1 ))" "$DIR/logs/server.log" | grep -q "Kafka Server started"; then
        started=1
      fi
    fi
    if (( started )) && api_versions_ok "$PORT" \
       && { [[ -z "$SASL_PORT" ]] || api_versions_ok "$SASL_PORT"; }; then
      log "broker ready on 127.0.0.1:$PORT${SASL_PORT:+ (SASL on 127.0.0.1:$SASL_PORT)}"
      return 0
    fi
    sleep 0.2
  done
  log "broker did not become ready within ${START_TIMEOUT}s; killing it"
  kill -KILL "$PID" 2>/dev/null || true
  wait_gone 10 || true
  log_tail
  rm -f "$DIR/pid"
  return 1
}

cmd_start() {
  parse_opts "$@"
  (( ${#ARGS[@]} == 0 )) || die "unexpected arguments: ${ARGS[*]}"
  cmd_fetch

  CONTROLLER_PORT="" SASL_PORT="" CLUSTER_ID=""
  if [[ -z "$DIR" ]]; then
    mkdir -p "$CACHE/run"
    DIR="$(mktemp -d "$CACHE/run/XXXXXXXX")"
  fi
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"

  if [[ -f "$DIR/broker.env" ]]; then
    load_env
    if (( SASL )) && [[ -z "$SASL_PORT" ]]; then
      die "$DIR was created without --sasl; purge it or use another dir"
    fi
    format_storage # in case the first start failed while formatting
  else
    init_dir
  fi
  apply_sets

  local pid
  if pid="$(broker_pid)"; then
    log "broker already running in $DIR (pid $pid)"
  else
    launch_broker || exit 1
    wait_ready || exit 1
  fi
  print_env | tee "$DIR/env"
}

# Sends SIGTERM to $DIR's broker, then SIGKILL after $1 seconds.
terminate() {
  local pid
  pid="$(broker_pid)" || { rm -f "$DIR/pid"; return 0; }
  log "stopping broker pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$1"; then
    log "broker still up after ${1}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone 10 || die "broker pid $pid does not die"
  fi
  rm -f "$DIR/pid"
}

wait_gone() { # waits up to $1 seconds for $DIR's broker to exit
  local deadline=$(( SECONDS + $1 ))
  while (( SECONDS < deadline )); do
    broker_pid >/dev/null || return 0
    sleep 0.2
  done
  ! broker_pid >/dev/null
}

cmd_stop() {
  parse_opts "$@"
  need_dir
  if broker_pid >/dev/null; then
    terminate "$STOP_TIMEOUT"
  else
    log "broker in $DIR is not running"
    rm -f "$DIR/pid"
  fi
  if (( PURGE )); then
    release_ports "$DIR"
    rm -rf "$DIR"
    log "removed $DIR"
  fi
}

cmd_kill() {
  parse_opts "$@"
  need_dir
  local pid
  if pid="$(broker_pid)"; then
    log "killing broker pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone 10 || die "broker pid $pid does not die"
  else
    log "broker in $DIR is not running"
  fi
  rm -f "$DIR/pid"
}

cmd_status() {
  parse_opts "$@"
  need_dir
  local pid
  if pid="$(broker_pid)"; then
    log "running, pid $pid"
  else
    log "stopped"
    return 1
  fi
}

cmd_env() {
  parse_opts "$@"
  need_dir
  CONTROLLER_PORT="" SASL_PORT="" CLUSTER_ID=""
  load_env
  print_env
}

resolve_brokers() {
  if [[ -z "$BROKERS" ]]; then
    [[ -n "$DIR" ]] || die "--brokers HOST:PORT or --dir DIR is required"
    need_dir
    CONTROLLER_PORT="" SASL_PORT="" CLUSTER_ID=""
    load_env
    BROKERS="127.0.0.1:$PORT"
  fi
}

cmd_topics() {
  parse_opts "$@"
  resolve_brokers
  ensure_java
  fetched || cmd_fetch
  set -- ${ARGS[@]+"${ARGS[@]}"}
  local action="${1:-}"
  case "$action" in
    create)
      [[ $# -ge 3 && $# -le 4 ]] || die "usage: topics create NAME PARTITIONS [compact]"
      local extra=()
      if [[ $# -eq 4 ]]; then
        [[ "$4" == compact ]] || die "the 4th argument of create can only be 'compact'"
        extra=(--config cleanup.policy=compact)
      fi
      run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
        --create --if-not-exists --topic "$2" --partitions "$3" --replication-factor 1 \
        ${extra[@]+"${extra[@]}"}
      ;;
    list)
      run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" --list ;;
    describe)
      run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" --describe \
        ${2:+--topic "$2"} ;;
    delete)
      [[ $# -eq 2 ]] || die "usage: topics delete NAME"
      run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
        --delete --if-exists --topic "$2" ;;
    *) die "usage: topics (--brokers B | --dir DIR) create NAME PARTITIONS [compact] | list | describe [NAME] | delete NAME" ;;
  esac
}

cmd_tool() {
  (( $# )) || die "usage: tool CLASS [ARGS...]"
  ensure_java
  fetched || cmd_fetch
  run_tool "$@"
}

main() {
  local cmd="${1:-}"
  (( $# )) && shift
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    topics) cmd_topics "$@" ;;
    tool) cmd_tool "$@" ;;
    *) usage ;;
  esac
}

main "$@"
