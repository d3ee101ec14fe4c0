"""Profile one hot path in-process, on the WSGI app, without HTTP or a load generator.

    DATABASE_URL=... REDIS_URL=... TOKEN_SERVICE_KEYS_DIR=... \
        .venv/bin/python bench/profile_hot_path.py [refresh_switch|introspection|login] [n]

Runs n requests (default 3000) under cProfile and prints the 25 functions with the most own
time, the service's and the framework's functions by cumulative time, the wall time per
request and the share of it spent waiting (wall - CPU). bench/profile_worker.py profiles the
real served worker under load instead.
"""

from __future__ import annotations

import base64
import cProfile
import io
import json
import pstats
import sys
import time
from urllib.parse import urlencode

from token_service import create_app
from token_service.demo import DEMO_PASSWORD, demo_secrets
from token_service.extensions import db


def call(app, path: str, form: dict, auth: str | None = None) -> dict:
    body = urlencode(form).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
    }
    if auth:
        environ["HTTP_AUTHORIZATION"] = auth
    status = []
    out = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    if not status[0].startswith("200"):
        raise RuntimeError(f"{path}: {status[0]} {out[:300]!r}")
    return json.loads(out)


def main() -> None:
    load = sys.argv[1] if len(sys.argv) > 1 else "refresh_switch"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    app = create_app()
    with app.app_context():
        secrets = demo_secrets()
        db.session.commit()
    login = {"grant_type": "password", "client_id": "storefront"}
    login |= {"username": "alice@acme.test", "password": DEMO_PASSWORD}
    state = {"rt": call(app, "/oauth/token", login)["refresh_token"], "i": 0}
    pair = f"order-service:{secrets['order-service']}".encode()
    basic = "Basic " + base64.b64encode(pair).decode()
    access = call(app, "/oauth/token", login)["access_token"]

    def one() -> None:
        if load == "refresh_switch":
            state["i"] += 1
            form = {"grant_type": "refresh_token", "client_id": "storefront"}
            form |= {"refresh_token": state["rt"]}
            form["legal_entity_id"] = "acme" if state["i"] % 2 else "globex"
            state["rt"] = call(app, "/oauth/token", form)["refresh_token"]
        elif load == "introspection":
            call(app, "/oauth/introspect", {"token": access}, basic)
        else:
            call(app, "/oauth/token", login)

    for _ in range(min(n // 10, 200)):  # warm up caches and the connection pool
        one()
    profiler = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    profiler.enable()
    for _ in range(n):
        one()
    profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("token_service|flask|werkzeug|authlib", 30)
    print(
        f"{load}: {wall / n * 1000:.3f} ms per request under the profiler, "
        f"{(wall - cpu) / n * 1000:.3f} ms of it waiting (wall - CPU)"
    )


if __name__ == "__main__":
    main()
