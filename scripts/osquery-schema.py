#!/usr/bin/env python3
"""Extracts osquery's table and column names and types from its public
table specs (the `specs/` directory of github.com/osquery/osquery) into
the console's completion data, services/api/console/osquery-schema.json.

Only names, types and the platforms a table is built for are kept:
osquery's descriptions are its own text and are left out.

Usage: scripts/osquery-schema.py <osquery git dir> [commit]
(the commit defaults to HEAD; the specs are read with `git show`).
"""
import json
import subprocess
import sys

ALL = ["darwin", "linux", "windows", "freebsd"]
PLATFORM_DIRS = {
    "darwin": ["darwin"], "linux": ["linux"], "windows": ["windows"],
    "freebsd": ["freebsd"], "posix": ["darwin", "linux", "freebsd"],
    "macwin": ["darwin", "windows"], "linwin": ["linux", "windows"],
    "lldpd": ["linux"], "yara": ["darwin", "linux", "freebsd"],
    "sleuthkit": ["darwin", "linux"], "smart": ["darwin", "linux"],
    "kernel": ["darwin"], "utility": ALL, "example": [],
}


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], check=True,
                          capture_output=True, text=True).stdout


def parse(text):
    """Runs one spec with stand-ins for its DSL; returns (name, columns, hidden)."""
    out = {"name": None, "columns": [], "hidden": []}

    class Type:
        def __init__(self, n):
            self.n = n

    def column(name, ctype, *_a, hidden=False, **_k):
        return (name, ctype.n, hidden)

    def schema(cols):
        for name, ctype, hidden in (c for c in cols if c):
            if not any(c[0] == name for c in out["columns"]):
                out["columns"].append((name, ctype))
            if hidden:
                out["hidden"].append(name)

    def table_name(name, *_a, **_k):
        out["name"] = name

    def ignore(*_a, **_k):
        return None

    env = {
        "table_name": table_name, "schema": schema, "Column": column,
        "extended_schema": lambda _p, cols: schema(cols),
        "ForeignKey": ignore, "description": ignore, "implementation": ignore,
        "examples": ignore, "attributes": ignore, "fuzz_paths": ignore,
        "select_all": ignore,
    }
    for t in ["TEXT", "INTEGER", "BIGINT", "UNSIGNED_BIGINT", "DOUBLE", "BLOB", "DATETIME"]:
        env[t] = Type(t.lower().replace("unsigned_bigint", "unsigned bigint"))
    for p in ["WINDOWS", "LINUX", "DARWIN", "FREEBSD", "POSIX", "MACWIN", "LINWIN"]:
        env[p] = p
    exec(compile(text, "<spec>", "exec"), env)  # noqa: S102 (osquery's own spec DSL)
    return out


def main():
    repo = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else git(repo, "rev-parse", "HEAD").strip()
    tables = {}
    for path in git(repo, "ls-tree", "-r", "--name-only", commit, "specs").split():
        if not path.endswith(".table"):
            continue
        parts = path.split("/")
        plats = ALL if len(parts) == 2 else PLATFORM_DIRS.get(parts[1], [])
        if not plats:
            continue
        spec = parse(git(repo, "show", f"{commit}:{path}"))
        if not spec["name"]:
            continue
        t = tables.setdefault(spec["name"], {"platforms": [], "columns": []})
        t["platforms"] = sorted(set(t["platforms"]) | set(plats))
        for c in spec["columns"]:
            if not any(x[0] == c[0] for x in t["columns"]):
                t["columns"].append(list(c))
    doc = {
        "source": f"github.com/osquery/osquery {commit} specs/ (table and column names and types only)",
        "tables": dict(sorted(tables.items())),
    }
    json.dump(doc, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
