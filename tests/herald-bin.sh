# Sourced by the test scripts that run the herald binary (tests/browser/run.sh,
# tests/socketio/run.sh) with `root` set to the repository root: resolves
# HERALD_BIN (default target/release/herald, else target/debug/herald) to an
# absolute, executable path and exports it.
if [[ -z "${HERALD_BIN:-}" ]]; then
  if [[ -x "$root/target/release/herald" ]]; then
    HERALD_BIN=target/release/herald
  elif [[ -x "$root/target/debug/herald" ]]; then
    HERALD_BIN=target/debug/herald
  else
    echo "run.sh: no herald binary in target/release or target/debug: build it or set HERALD_BIN" >&2
    exit 1
  fi
fi
case "$HERALD_BIN" in /*) ;; *) HERALD_BIN="$root/$HERALD_BIN" ;; esac
if [[ ! -x "$HERALD_BIN" ]]; then
  echo "run.sh: $HERALD_BIN is not an executable" >&2
  exit 1
fi
export HERALD_BIN
