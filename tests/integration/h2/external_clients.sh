#!/bin/sh
# External HTTP/2 clients against h2_test_server, exactly as users run them:
# curl (cleartext prior knowledge; TLS 1.3 with client certificates) and h2load.
# usage: external_clients.sh H2_TEST_SERVER CURL H2LOAD
set -eu

SERVER=$1
CURL=$2
H2LOAD=$3
TMP=$(mktemp -d /tmp/mrd-h2-ext-XXXXXX)
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*" >&2
    for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}

# start_server NAME ARGS...: sets PORT and SERVER_PID.
start_server() {
    name=$1
    shift
    "$SERVER" --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    SERVER_PID=$!
    PIDS="$PIDS $SERVER_PID"
    tries=0
    while ! grep -q '^port=' "$TMP/$name.out"; do
        tries=$((tries + 1))
        [ "$tries" -le 200 ] || fail "$name did not start"
        kill -0 "$SERVER_PID" 2>/dev/null || fail "$name exited early"
        sleep 0.05
    done
    PORT=$(sed -n 's/^port=//p' "$TMP/$name.out")
}

# stop_server PID: SIGTERM; a clean exit (0) also means no leak was reported.
stop_server() {
    kill -TERM "$1"
    rc=0
    wait "$1" || rc=$?
    [ "$rc" -eq 0 ] || fail "server $1 exited with $rc"
    rest=""
    for p in $PIDS; do [ "$p" = "$1" ] || rest="$rest $p"; done
    PIDS=$rest
}

expect_h2_ok() { # FILE: curl output whose last line is "http_version http_code"
    last=$(tail -n 1 "$1")
    [ "$last" = "2 200" ] || fail "expected HTTP/2 200, got '$last' ($1)"
}

h2load_ok() { # N OUTPUT
    grep -q "requests: $1 total, $1 started, $1 done, $1 succeeded, 0 failed, 0 errored" "$2" ||
        { cat "$2" >&2; fail "h2load did not report $1 succeeded"; }
}

# ---- cleartext prior-knowledge h2 ----------------------------------------------------------
start_server clear --cleartext
CLEAR_PID=$SERVER_PID
URL=http://127.0.0.1:$PORT

"$CURL" -sS --http2-prior-knowledge -w '\n%{http_version} %{http_code}' "$URL/v1/status" \
    >"$TMP/status.txt"
expect_h2_ok "$TMP/status.txt"
grep -q '"status":"ok"' "$TMP/status.txt" || fail "status body"

head -c 100000 /dev/urandom >"$TMP/body.bin"
"$CURL" -sS --http2-prior-knowledge --data-binary @"$TMP/body.bin" -o "$TMP/echo.bin" "$URL/echo"
cmp -s "$TMP/body.bin" "$TMP/echo.bin" || fail "echo differs"

"$CURL" -sS --http2-prior-knowledge -o "$TMP/stream.bin" "$URL/stream?bytes=20000000"
[ "$(wc -c <"$TMP/stream.bin")" -eq 20000000 ] || fail "stream length"

"$CURL" -sS --http2-prior-knowledge --data-binary @"$TMP/body.bin" "$URL/sink" >"$TMP/sink.txt"
grep -q '"bytes":100000' "$TMP/sink.txt" || fail "sink count: $(cat "$TMP/sink.txt")"

"$H2LOAD" -n 2000 -c 4 -m 16 "$URL/v1/status" >"$TMP/h2load.txt" 2>&1 || true
h2load_ok 2000 "$TMP/h2load.txt"
echo "h2load cleartext: $(grep -E '^finished in' "$TMP/h2load.txt")"

"$H2LOAD" -n 400 -c 2 -m 8 -d "$TMP/body.bin" "$URL/echo" >"$TMP/h2load-post.txt" 2>&1 || true
h2load_ok 400 "$TMP/h2load-post.txt"

stop_server "$CLEAR_PID"

# ---- TLS 1.3 with mutual certificates ------------------------------------------------------
"$SERVER" --gen-certs "$TMP/pki" server client1 2>"$TMP/gen.log"
"$SERVER" --gen-certs "$TMP/other" intruder 2>>"$TMP/gen.log"
PKI=$TMP/pki
start_server tls --tls "$PKI"
TLS_PID=$SERVER_PID
URL=https://127.0.0.1:$PORT

"$CURL" -sS --http2 --cacert "$PKI/ca.crt" --cert "$PKI/client1.crt" --key "$PKI/client1.key" \
    -w '\n%{http_version} %{http_code}' "$URL/v1/status" >"$TMP/tls-status.txt"
expect_h2_ok "$TMP/tls-status.txt"
grep -q '"peer":"client1"' "$TMP/tls-status.txt" || fail "peer CN not seen"

"$CURL" -sS --http2 --tlsv1.3 --cacert "$PKI/ca.crt" --cert "$PKI/client1.crt" \
    --key "$PKI/client1.key" -o /dev/null "https://localhost:$PORT/v1/status" ||
    fail "localhost is in the server's certificate"

if "$CURL" -sS --http2 --cacert "$PKI/ca.crt" -o /dev/null "$URL/v1/status" 2>"$TMP/nocert.err"
then
    fail "a client without a certificate was served"
fi
if "$CURL" -sS --http2 --cacert "$PKI/ca.crt" --cert "$TMP/other/intruder.crt" \
    --key "$TMP/other/intruder.key" -o /dev/null "$URL/v1/status" 2>"$TMP/intruder.err"
then
    fail "a client certificate from another CA was accepted"
fi
if "$CURL" -sS --http2 --cacert "$PKI/ca.crt" --cert "$PKI/client1.crt" --key "$PKI/client1.key" \
    --resolve "wrong.example:$PORT:127.0.0.1" -o /dev/null "https://wrong.example:$PORT/v1/status" \
    2>"$TMP/wrongname.err"
then
    fail "a server certificate without the name was accepted"
fi
if "$CURL" -sS --http1.1 --cacert "$PKI/ca.crt" --cert "$PKI/client1.crt" --key "$PKI/client1.key" \
    -o /dev/null "$URL/v1/status" 2>"$TMP/h1.err"
then
    fail "a client that only speaks http/1.1 was served"
fi

# h2load has no client-certificate option: with mutual TLS it must be refused.
"$H2LOAD" -n 10 -c 1 "$URL/v1/status" >"$TMP/h2load-tls.txt" 2>&1 || true
grep -q "requests: 10 total, .* 0 succeeded" "$TMP/h2load-tls.txt" ||
    { cat "$TMP/h2load-tls.txt" >&2; fail "h2load without a certificate was served"; }

stop_server "$TLS_PID"

# h2load over TLS 1.3 against a server that authenticates itself only.
start_server tls-server-auth --tls "$PKI" --no-client-cert
TLS_PID=$SERVER_PID
"$H2LOAD" -n 2000 -c 4 -m 16 "https://127.0.0.1:$PORT/v1/status" >"$TMP/h2load-tls2.txt" 2>&1 || true
h2load_ok 2000 "$TMP/h2load-tls2.txt"
grep -q "Protocol: TLSv1.3" "$TMP/h2load-tls2.txt" || fail "h2load did not use TLS 1.3"
grep -q "Application protocol: h2" "$TMP/h2load-tls2.txt" || fail "h2load did not use h2"
echo "h2load tls: $(grep -E '^finished in' "$TMP/h2load-tls2.txt")"
stop_server "$TLS_PID"
echo "external clients: ok"
