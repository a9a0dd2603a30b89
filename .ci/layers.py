#!/usr/bin/env python3
"""Checks the layering that src/lib.rs lists: each top-level module may use
only the modules declared before it in lib.rs (ARCHITECTURE.md's map), so
there is no import cycle between modules. Reads `crate::<module>` paths in
each module's files (doc comments and tests excluded)."""
import pathlib
import re
import sys

src = pathlib.Path(__file__).resolve().parent.parent / "src"
order = re.findall(r"^(?:pub )?mod (\w+);", (src / "lib.rs").read_text(), re.M)
rank = {name: i for i, name in enumerate(order)}
# Items re-exported at the root (`crate::FreqLimitError`) count as their module.
root_items = {}
for module, items in re.findall(r"^pub use (\w+)::\{?([\w, ]+)\}?;", (src / "lib.rs").read_text(), re.M):
    for item in items.split(","):
        root_items[item.strip()] = module


def files_of(module):
    single = src / f"{module}.rs"
    folder = src / module
    found = [single] if single.exists() else []
    if folder.is_dir():
        found += sorted(folder.rglob("*.rs"))
    return found


def code_lines(path):
    for line in path.read_text().splitlines():
        if line.startswith("#[cfg(test)]"):
            break  # the unit tests at the end of a file may use anything
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        yield line


bad = []
for module in order:
    for path in files_of(module):
        for n, line in enumerate(code_lines(path), 1):
            names = re.findall(r"crate::(\w+)", line)
            for group in re.findall(r"crate::\{([^}]*)\}", line):
                names += re.findall(r"\b(\w+)\b", group)
            for used in names:
                used = root_items.get(used, used)
                if used in rank and used != module and rank[used] > rank[module]:
                    bad.append(f"{path.relative_to(src.parent)}:{n}: `{module}` uses `{used}`, declared after it in lib.rs")
            # `super::` from a top-level file is the crate root: fine.
if bad:
    print("\n".join(bad))
    sys.exit(1)
print(f"layering holds: {' -> '.join(order)}")
