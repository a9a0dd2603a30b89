#!/usr/bin/env python3
"""Checks the declared MSRV (`rust-version` in Cargo.toml) against what can be
checked without installing that toolchain (this machine has one toolchain and
cannot fetch others):

* every crate the library builds on (normal and build dependencies, all
  features, as locked) declares a `rust-version` no newer than ours;
* our own code is held to it by clippy's `incompatible_msrv` lint, which
  `cargo clippy -- -D warnings` runs (it reads `rust-version`).

Exits 1 and names the offenders otherwise."""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"]
    )
)
packages = {p["id"]: p for p in meta["packages"]}
root = meta["resolve"]["root"]
ours = packages[root]["rust_version"]
if not ours:
    sys.exit("Cargo.toml declares no rust-version")
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

# Walk normal and build edges only: dev-dependencies do not reach users.
seen, todo = set(), [root]
while todo:
    node = nodes[todo.pop()]
    for dep in node["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds & {None, "build"} and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])

too_new = []
undeclared = 0
for pkg_id in sorted(seen, key=lambda i: packages[i]["name"]):
    pkg = packages[pkg_id]
    needs = pkg.get("rust_version")
    if needs is None:
        undeclared += 1
    elif version(needs) > version(ours):
        too_new.append(f"{pkg['name']} {pkg['version']} needs Rust {needs}")

print(
    f"MSRV {ours}: {len(seen)} dependencies checked, "
    f"{len(seen) - undeclared - len(too_new)} declare an older or equal rust-version, "
    f"{undeclared} declare none"
)
if too_new:
    print("newer than our MSRV:\n  " + "\n  ".join(too_new))
    sys.exit(1)
