"""Grow a PostgreSQL database that already has the schema and the demo data to production size:
legal entities, customers, assignments, customer groups, their scopes and members, all with
`g_` ids so that nothing collides with the demo rows. Loaded with COPY in one transaction
(nothing is added if a constraint fails), then ANALYZEd. Repeatable: a fixed seed, and whatever
can be derived from a row's number is (a customer's first entity is `n % entities`).

    .venv/bin/python bench/growth.py --database-url postgresql://postgres@127.0.0.1:5432/db \\
        [--customers 1000000] [--entities 100000] [--groups 400000] [--seed 42]

Progress goes to stderr; the last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg

from token_service.models import ASSIGNMENT_TYPES, GROUP_CODES
from token_service.security import hash_password

PASSWORD = "correct horse battery staple"  # the demo's, so a generated customer can log in
TABLES = (
    "legal_entities",
    "customers",
    "assignments",
    "customer_groups",
    "group_scopes",
    "group_members",
)


class Progress:
    """A one-line text progress bar on stderr: `label done/total pct rate`."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.start = self.shown = time.perf_counter()

    def add(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.shown >= 0.25:
            self.shown = now
            self._show(now, "")

    def finish(self) -> None:
        self._show(time.perf_counter(), "\n")

    def _show(self, now: float, end: str) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        pct = 100 * self.done / self.total if self.total else 100
        sys.stderr.write(
            f"\r{self.label} {self.done}/{self.total} {pct:.0f}% {rate:.0f} rows/s\033[K{end}"
        )
        sys.stderr.flush()


def plain_url(url: str) -> str:
    """psycopg wants a libpq URL: drop SQLAlchemy's `+psycopg` driver suffix."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Layout:
    """Where each generated row points, computed from row numbers (0-based) alone."""

    def __init__(self, customers: int, entities: int, groups: int) -> None:
        self.customers, self.entities, self.groups = customers, entities, groups
        self._le = max(6, len(str(entities)))
        self._cus = max(7, len(str(customers)))
        self._grp = max(7, len(str(groups)))
        # Spread a customer's entities apart (not neighbours); distinct while entities >= 3.
        self.stride = max(1, entities // 3)

    def entity_id(self, i: int) -> str:
        return f"g_le_{i + 1:0{self._le}d}"

    def customer_id(self, n: int) -> str:
        return f"g_cus_{n + 1:0{self._cus}d}"

    def group_id(self, g: int) -> str:
        return f"g_grp_{g + 1:0{self._grp}d}"

    def entities_of(self, n: int, k: int) -> list[int]:
        """The k entities customer n is assigned to; the first is its default (PRIMARY)."""
        base = n % self.entities
        return [(base + j * self.stride) % self.entities for j in range(min(k, self.entities))]

    def entity_of_group(self, g: int) -> int:
        return g % self.entities

    def group_count(self, e: int) -> int:
        """Groups of entity e are e, e + entities, e + 2 * entities, ... below `groups`."""
        return (self.groups - e + self.entities - 1) // self.entities if e < self.groups else 0


def copy_rows(cur, table: str, columns: tuple[str, ...], rows: Iterator[tuple], total: int) -> int:
    """COPY `rows` into `table` with a progress bar; returns how many were written."""
    bar = Progress(table, total)
    n = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
            if n % 1000 == 0:
                bar.add(1000)
    bar.add(n % 1000)
    bar.total = n  # the totals passed in are estimates
    bar.finish()
    return n


def generate(conn: psycopg.Connection, layout: Layout, seed: int) -> dict[str, int]:
    """Write every generated table in one transaction; returns the row counts."""
    now = datetime.now(UTC)
    password_hash = hash_password(PASSWORD)  # argon2 is slow on purpose: once, for every row
    counts: dict[str, int] = {}
    entities, customers, groups = layout.entities, layout.customers, layout.groups

    with conn.cursor() as cur:
        cur.execute("SELECT name FROM scopes ORDER BY name")
        scopes = [name for (name,) in cur.fetchall()]
        if not scopes:
            raise SystemExit("no scopes: run `token-service migrate` first")
        cur.execute("SELECT 1 FROM legal_entities WHERE id LIKE 'g\\_le\\_%' LIMIT 1")
        if cur.fetchone():
            raise SystemExit("generated rows are already there: use a fresh database")

        def legal_entities() -> Iterator[tuple]:
            rng = random.Random(f"{seed}:legal_entities")
            companies: list[int] = []
            for i in range(entities):
                if companies and rng.random() < 0.2:
                    parent = layout.entity_id(companies[rng.randrange(len(companies))])
                    type_ = "SUBSIDIARY"
                else:
                    parent, type_ = None, "COMPANY"
                    companies.append(i)
                yield (layout.entity_id(i), f"Growth {i + 1}", type_, parent, 1, now, now)

        counts["entities"] = copy_rows(
            cur,
            "legal_entities",
            ("id", "name", "type", "parent_id", "version", "created_at", "updated_at"),
            legal_entities(),
            entities,
        )

        def customer_rows() -> Iterator[tuple]:
            for n in range(customers):
                yield (
                    layout.customer_id(n),
                    f"g{n + 1}@growth.test",
                    password_hash,
                    "active",
                    layout.entity_id(n % entities),
                    1,
                    now,
                    now,
                )

        counts["customers"] = copy_rows(
            cur,
            "customers",
            (
                "id",
                "email",
                "password_hash",
                "status",
                "default_legal_entity_id",
                "version",
                "created_at",
                "updated_at",
            ),
            customer_rows(),
            customers,
        )

        # How many entities each customer is assigned to (1-3): needed again for memberships.
        assigned = bytearray(customers)
        others = ASSIGNMENT_TYPES[1:]

        def assignments() -> Iterator[tuple]:
            rng = random.Random(f"{seed}:assignments")
            for n in range(customers):
                k = min(1 + int(rng.random() * 3), entities)
                assigned[n] = k
                cid = layout.customer_id(n)
                for j, e in enumerate(layout.entities_of(n, k)):
                    type_ = "PRIMARY" if j == 0 else others[int(rng.random() * len(others))]
                    yield (cid, layout.entity_id(e), type_, now)

        counts["assignments"] = copy_rows(
            cur,
            "assignments",
            ("customer_id", "legal_entity_id", "type", "created_at"),
            assignments(),
            customers * 2,
        )

        def group_rows() -> Iterator[tuple]:
            rng = random.Random(f"{seed}:customer_groups")
            for g in range(groups):
                code = GROUP_CODES[int(rng.random() * len(GROUP_CODES))]
                entity = layout.entity_id(layout.entity_of_group(g))
                name = f"{code.title()} {g + 1}"
                yield (layout.group_id(g), name, entity, code, False, 1, now, now)

        counts["groups"] = copy_rows(
            cur,
            "customer_groups",
            (
                "id",
                "name",
                "legal_entity_id",
                "code",
                "predefined",
                "version",
                "created_at",
                "updated_at",
            ),
            group_rows(),
            groups,
        )

        def group_scopes() -> Iterator[tuple]:
            rng = random.Random(f"{seed}:group_scopes")
            for g in range(groups):
                gid = layout.group_id(g)
                for scope in rng.sample(scopes, min(1 + int(rng.random() * 4), len(scopes))):
                    yield (gid, scope)

        counts["group_scopes"] = copy_rows(
            cur, "group_scopes", ("group_id", "scope"), group_scopes(), int(groups * 2.5)
        )

        def members() -> Iterator[tuple]:
            # 1-2 groups among those of the customer's entities: (group, entity) always matches
            # both composite keys, since the group is its entity's and the customer assigned.
            rng = random.Random(f"{seed}:group_members")
            for n in range(customers):
                ents = [e for e in layout.entities_of(n, assigned[n]) if layout.group_count(e)]
                if not ents:
                    continue
                total = sum(layout.group_count(e) for e in ents)
                picks = [int(rng.random() * total)]
                if total > 1 and rng.random() < 0.5:
                    j = int(rng.random() * (total - 1))
                    picks.append(j + 1 if j >= picks[0] else j)
                cid = layout.customer_id(n)
                for pick in picks:
                    for e in ents:
                        c = layout.group_count(e)
                        if pick < c:
                            g = e + pick * entities
                            yield (layout.group_id(g), cid, layout.entity_id(e), now)
                            break
                        pick -= c

        counts["members"] = copy_rows(
            cur,
            "group_members",
            ("group_id", "customer_id", "legal_entity_id", "created_at"),
            members(),
            int(customers * 1.5),
        )
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.entities < 1 or args.customers < 0 or args.groups < 0:
        parser.error("--entities must be >= 1, --customers and --groups >= 0")

    start = time.perf_counter()
    layout = Layout(args.customers, args.entities, args.groups)
    with psycopg.connect(plain_url(args.database_url)) as conn:
        counts = generate(conn, layout, args.seed)
        conn.commit()
        loaded = time.perf_counter() - start
        conn.autocommit = True
        sys.stderr.write("ANALYZE\n")
        conn.execute(f"ANALYZE {', '.join(TABLES)}")
    summary = {
        "customers": counts["customers"],
        "entities": counts["entities"],
        "groups": counts["groups"],
        "assignments": counts["assignments"],
        "members": counts["members"],
        "group_scopes": counts["group_scopes"],
        "seconds": round(time.perf_counter() - start, 1),
        "load_seconds": round(loaded, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
