#!/bin/sh
# The systemd unit as systemd itself judges it: `systemd-analyze verify` is
# clean, `systemd-analyze security --offline=true` scores an overall exposure
# of 2.0 or lower, and `make install DESTDIR=...` puts the unit and the
# example config where the unit's ExecStart= expects them, and the daemon
# accepts every key of the example config; tinyd.socket verifies with the
# service, is installed beside it, and the daemon serves on the socket that
# socket activation passes it. TAP output.
#
# verify insists that ExecStart='s binary exists, and the generated unit
# names the install path (e.g. /usr/local/bin/tinyd), so the copy that is
# analysed points ExecStart= at the built server/tinyd, or /bin/true before
# the daemon exists. Everything else in the unit is analysed unchanged.
set -u

srcdir=${TD_SRCDIR:-.}
builddir=${TD_BUILDDIR:-.}
unit=$builddir/systemd/tinyd.service

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "1..0 # SKIP systemd-analyze not found (Debian package systemd)"
    exit 0
fi
if [ ! -f "$unit" ]; then
    echo "1..0 # SKIP $unit not generated (run make first)"
    exit 0
fi

echo "1..11"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/td_systemd.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
n=0
ok()   { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }

# 1. The template was substituted: no @var@ left, ExecStart= absolute.
exec_line=$(sed -n 's/^ExecStart=//p' "$unit")
no_placeholders() {
    ! grep -q '@[a-z_]*@' "$unit" &&
    case $exec_line in /*/tinyd\ --config\ /*/tinyd/tinyd.conf) true ;; *) false ;; esac
}
check "generated unit has absolute paths (ExecStart=$exec_line)" no_placeholders

# 2. What issue 2 asks of the unit, each directive present.
directives_present() {
    for d in '^Type=notify$' '^NotifyAccess=main$' \
             '^ExecReload=/bin/kill -HUP \$MAINPID$' '^WatchdogSec=' \
             '^Restart=on-failure$' '^DynamicUser=yes$' '^StateDirectory=tinyd$' \
             '^ConfigurationDirectory=tinyd$' '^Environment=OPENBLAS_NUM_THREADS=1$'; do
        grep -q "$d" "$unit" || { echo "# missing: $d"; return 1; }
    done
}
check "unit is Type=notify with reload, watchdog, DynamicUser, StateDirectory" \
    directives_present

bin=$builddir/server/tinyd
[ -x "$bin" ] || bin=/bin/true
mkdir -p "$tmp/units"
sed "s|^ExecStart=[^ ]*|ExecStart=$bin|" "$unit" > "$tmp/units/tinyd.service"
echo "# analysing with ExecStart=$bin"

# 3. verify: exit 0 and not a single warning.
out=$(systemd-analyze verify "$tmp/units/tinyd.service" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
    ok "systemd-analyze verify is clean"
else
    printf '%s\n' "$out" | sed 's/^/# /'
    fail "systemd-analyze verify is clean (exit $rc)"
fi

# 4. security: overall exposure <= 2.0.
out=$(systemd-analyze security --offline=true "$tmp/units/tinyd.service" 2>&1)
score=$(printf '%s\n' "$out" |
        sed -n 's/.*Overall exposure level for tinyd\.service: \([0-9.]*\).*/\1/p')
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    ok "systemd-analyze security: overall exposure $score <= 2.0"
else
    printf '%s\n' "$out" | grep -v '✓' | sed 's/^/# /'
    fail "systemd-analyze security: overall exposure '${score}' <= 2.0"
fi

# 5-7. make install DESTDIR=...: the unit lands in a systemd/system
# directory, and the paths its ExecStart= names exist under DESTDIR. A
# nested make must not inherit the jobserver of the make running us.
dest=$tmp/dest
if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$builddir" install \
        DESTDIR="$dest" > "$tmp/install.log" 2>&1; then
    sed 's/^/# /' "$tmp/install.log"
fi
installed=$(find "$dest" -path '*/systemd/system/tinyd.service' 2>/dev/null | head -n 1)
check "make install puts the unit in systemd's unit directory (${installed#$dest})" \
    test -n "$installed"

conf=$(printf '%s\n' "$exec_line" | sed 's/.* --config //')
check "make install puts the example config at the unit's --config $conf" \
    cmp -s "$dest$conf" "$srcdir/systemd/tinyd.conf"

daemon=${exec_line%% *}
if [ -x "$builddir/server/tinyd" ]; then
    check "make install puts the daemon at the unit's ExecStart $daemon" \
        test -x "$dest$daemon"
else
    skip "make install puts the daemon at the unit's ExecStart $daemon" \
        "server/tinyd not built yet"
fi

# 8. The daemon accepts every key of the example config: it starts with it,
# becomes ready and stops cleanly. listen/models/state are overridden by
# flags (flags win over the file) so it runs unprivileged on a free port.
if [ -x "$builddir/server/tinyd" ]; then
    mkdir -p "$tmp/run/models" "$tmp/run/state"
    "$builddir/server/tinyd" --config "$srcdir/systemd/tinyd.conf" \
        --listen 127.0.0.1:0 --models "$tmp/run/models" \
        --state "$tmp/run/state" > "$tmp/run.log" 2>&1 &
    pid=$!
    i=0
    while [ $i -lt 100 ] && kill -0 $pid 2>/dev/null &&
          ! grep -q ' ready: ' "$tmp/run.log"; do
        sleep 0.1; i=$((i + 1))
    done
    grep -q ' ready: ' "$tmp/run.log"; ready=$?
    kill -TERM $pid 2>/dev/null
    wait $pid; rc=$?
    if [ $ready -eq 0 ] && [ $rc -eq 0 ]; then
        ok "tinyd runs with systemd/tinyd.conf and exits 0 on SIGTERM"
    else
        sed 's/^/# /' "$tmp/run.log"
        fail "tinyd runs with systemd/tinyd.conf (ready: $ready, exit $rc)"
    fi
else
    skip "tinyd runs with systemd/tinyd.conf" "server/tinyd not built yet"
fi

# 9-11 (ops7). Socket activation: tinyd.socket is verified together with
# the service it activates, installed beside it, and a daemon started the
# way systemd starts it (systemd-socket-activate sets LISTEN_FDS/LISTEN_PID
# and execs) serves on the passed socket, not on its own --listen.
sock_src=$srcdir/systemd/tinyd.socket
cp "$sock_src" "$tmp/units/tinyd.socket"
out=$(cd "$tmp/units" && systemd-analyze verify tinyd.socket tinyd.service 2>&1); rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
    ok "systemd-analyze verify tinyd.socket tinyd.service is clean"
else
    printf '%s\n' "$out" | sed 's/^/# /'
    fail "systemd-analyze verify tinyd.socket tinyd.service is clean (exit $rc)"
fi

sock_installed=${installed%/tinyd.service}/tinyd.socket
check "make install puts tinyd.socket beside the service (${sock_installed#$dest})" \
    cmp -s "$dest${sock_installed#$dest}" "$sock_src"

listen=$(sed -n 's/^ListenStream=//p' "$sock_src" | head -n 1)
host=${listen%:*}
if [ ! -x "$builddir/server/tinyd" ]; then
    skip "tinyd serves on the socket systemd passes it" "server/tinyd not built yet"
elif ! command -v systemd-socket-activate >/dev/null 2>&1 ||
     ! command -v python3 >/dev/null 2>&1; then
    skip "tinyd serves on the socket systemd passes it" \
        "systemd-socket-activate or python3 not found"
else
    # The unit's host (127.0.0.1) on a free port instead of 8080, which
    # may be taken on a build machine.
    port=$(python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$host")
    mkdir -p "$tmp/act/models" "$tmp/act/state"
    systemd-socket-activate -l "$host:$port" -- "$builddir/server/tinyd" \
        --listen 127.0.0.1:1 --models "$tmp/act/models" \
        --state "$tmp/act/state" > "$tmp/act.log" 2>&1 &
    pid=$!
    got=$(python3 - "$host" "$port" <<'PY'
import http.client, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=2)
        c.request("GET", "/v2/health/ready")
        r = c.getresponse()
        body = r.read().decode()
        if r.status == 200:
            print(body)
            break
    except OSError:
        pass
    time.sleep(0.1)
PY
)
    kill -TERM $pid 2>/dev/null
    wait $pid; rc=$?
    if [ "$got" = '{"ready":true}' ] && [ $rc -eq 0 ]; then
        ok "tinyd serves on the socket systemd passes it ($host:$port) and exits 0"
    else
        sed 's/^/# /' "$tmp/act.log"
        fail "tinyd serves on the socket systemd passes it (answer '$got', exit $rc)"
    fi
fi
