#!/usr/bin/env python3
"""Prints the import graph of src/'s top-level modules (from their `crate::` paths) and exits
non-zero if it has a cycle. Usage: python3 scripts/module_graph.py [REPO_DIR]"""
import os
import re
import sys

root = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "src")
edges = {}
for dirpath, _, files in os.walk(root):
    for name in files:
        if not name.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(dirpath, name), root)[:-3].split(os.sep)
        if rel == ["lib"]:
            continue
        module = rel[0]
        text = re.sub(r"//.*", "", open(os.path.join(dirpath, name), encoding="utf-8").read())
        for target in re.findall(r"crate::([a-z_]+)", text):
            if target != module:
                edges.setdefault(module, set()).add(target)


def reachable(start):
    seen, stack = set(), [start]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


for module in sorted(edges):
    print(f"{module} -> {', '.join(sorted(edges[module]))}")
cycles = sorted((a, b) for a in edges for b in edges[a] if a in reachable(b))
if cycles:
    print(f"module graph: cycle through {cycles}")
    sys.exit(1)
print("module graph: no cycle")
