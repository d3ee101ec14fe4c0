#!/usr/bin/env bash
# Quick one-run comparison of the service against its floors under the same gunicorn setup:
# one sync worker pinned to core 0, wrk (16 connections) pinned to core 1.
#   bench/quick/run.sh sqlite|pg        (DUR=seconds per load, default 8)
# Prints "RESULT requests errors rps p50_ms p90_ms p99_ms" per load. Needs wrk (apt-get install wrk).
set -u
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd); V=$ROOT/.venv/bin; WORK=$(mktemp -d)
BACKEND=$1; DUR=${DUR:-8}
export TOKEN_SERVICE_KEYS_DIR=$WORK/keys
mkdir -p $WORK/keys; $V/token-service keys generate >/dev/null 2>&1
if [ "$BACKEND" = pg ]; then
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS benchq WITH (FORCE)" -c "CREATE DATABASE benchq"
  export DATABASE_URL=postgresql://postgres@127.0.0.1:5432/benchq REDIS_URL=redis://127.0.0.1:6379/0 TOKEN_SERVICE_REDIS_PREFIX=benchq:
else
  export DATABASE_URL=sqlite:///$WORK/db.sqlite3; unset REDIS_URL
fi
export TOKEN_SERVICE_LOGIN_FREE_ATTEMPTS=1000000
cd "$ROOT"
$V/token-service migrate >/dev/null 2>&1
SECRETS=$($V/token-service demo 2>/dev/null)
OS=$(echo "$SECRETS" | sed -n 's/client order-service secret: //p'); AC=$(echo "$SECRETS" | sed -n 's/client admin-cli secret: //p')
start() { taskset -c 0 $V/gunicorn -w 1 -b 127.0.0.1:$2 --chdir $3 "$1" >$WORK/gunicorn-$2.log 2>&1 & echo $!; }
P1=$(start floorapp:app 8301 "$HERE"); P2=$(start wsgi:app 8302 "$ROOT"); sleep 3
w() { taskset -c 1 wrk -t${T:-2} -c16 -d${DUR}s -s "$HERE/${SCRIPT:-post.lua}" "$@" 2>&1 | grep RESULT; }
login() { curl -s -X POST 127.0.0.1:8302/oauth/token -d grant_type=password -d client_id=storefront -d username=alice@acme.test --data-urlencode "password=correct horse battery staple"; }
BARE=$(BODY="token=x" w http://127.0.0.1:8301/bare); echo "bare $BARE"
SIGN=$(BODY="grant_type=refresh_token&refresh_token=abcdefgh" w http://127.0.0.1:8301/sign); echo "sign $SIGN"
CC=$(BODY="grant_type=client_credentials" AUTH="Basic $(printf 'admin-cli:%s' "$AC" | base64 -w0)" w http://127.0.0.1:8302/oauth/token); echo "client_credentials $CC"
LOGIN=$(BODY="grant_type=password&client_id=storefront&username=alice%40acme.test&password=correct+horse+battery+staple" w http://127.0.0.1:8302/oauth/token); echo "password_login $LOGIN"
AT=$(login | python3 -c "import json,sys;print(json.load(sys.stdin)['access_token'])")
INT=$(BODY="token=$AT" AUTH="Basic $(printf 'order-service:%s' "$OS" | base64 -w0)" w http://127.0.0.1:8302/oauth/introspect); echo "introspect $INT"
for sw in 0 1; do
  rm -f $WORK/tokens; for i in $(seq 16); do login | python3 -c "import json,sys;print(json.load(sys.stdin)['refresh_token'])" >> $WORK/tokens; done
  R=$(TOKENS_FILE=$WORK/tokens SWITCH=$sw T=16 SCRIPT=chain.lua w http://127.0.0.1:8302/oauth/token); echo "refresh switch=$sw $R"
done
kill $P1 $P2; wait 2>/dev/null; rm -rf "$WORK"
