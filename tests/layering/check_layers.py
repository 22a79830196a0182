#!/usr/bin/env python3
"""check_layers.py - the module include graph must have no cycle.

A module X is src/X.c with include/X.h (DESIGN.md section 2). main.c has no
header and a header without a .c (sluice.h) is a module of its own. There is
an edge X -> Y when src/X.c or include/X.h says #include "Y.h" and Y is one of
the modules; system headers (<...>) and headers that are not modules are not
edges, nor is a module including its own header.

Exit 0 and print the modules in layer order (each layer depends only on the
layers above it in the listing) when the graph has no cycle. Exit 1 and print
each cycle as "a -> b -> a", with the file and line of every include on it,
when it has one. Exit 2 on a usage error.

  check_layers.py [--src DIR] [--include DIR] [--expect-cycle [CYCLE]]

--src and --include default to the src/ and include/ of the tree holding this
script. --expect-cycle turns the check around, for the checker's own tests:
exit 0 only when a cycle is found (and, given CYCLE such as "a -> b -> a",
only when that cycle is among those printed). Standard library only.
"""

import argparse
import collections
import os
import re
import sys

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
IF_RE = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)$")


def strip_comments(text):
    """Text with every comment replaced by spaces (newlines kept, so line
    numbers stay), string and character literals left alone."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:end]))
            i = end
        elif c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def includes(path):
    """[(line number, header name)] for each #include "..." in path, outside
    comments and outside #if 0 blocks."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = strip_comments(f.read()).split("\n")
    found = []
    depth = 0  # > 0 inside an #if 0 block: how many #if levels deep
    for number, line in enumerate(lines, 1):
        m = IF_RE.match(line)
        if m:
            word, rest = m.group(1), m.group(2).strip()
            if depth:
                if word.startswith("if"):
                    depth += 1
                elif word == "endif" or (depth == 1 and word in ("else", "elif")):
                    depth -= 1
            elif word == "if" and rest == "0":
                depth = 1
            continue
        if depth:
            continue
        m = INCLUDE_RE.match(line)
        if m:
            found.append((number, m.group(1)))
    return found


def modules(src_dir, include_dir):
    """{module: [files]} from the .c files in src_dir and the .h files in
    include_dir (not their subdirectories)."""
    files = collections.defaultdict(list)
    for directory, suffix in ((src_dir, ".c"), (include_dir, ".h")):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(suffix) and os.path.isfile(path):
                files[name[: -len(suffix)]].append(path)
    return dict(files)


def unread(src_dir, include_dir):
    """Files the check does not read (a .h in src/, a .c in include/,
    subdirectories), so that a layout change cannot hide an include."""
    out = []
    for directory, suffix in ((src_dir, ".c"), (include_dir, ".h")):
        for name in sorted(os.listdir(directory)):
            if not name.endswith(suffix) or not os.path.isfile(os.path.join(directory, name)):
                out.append(os.path.join(directory, name))
    return out


def include_graph(mods):
    """{module: {dependency: [(file, line, text)]}}: every include site of
    every edge."""
    graph = {}
    for mod, paths in mods.items():
        edges = collections.defaultdict(list)
        for path in paths:
            for number, header in includes(path):
                base = os.path.basename(header)
                if not base.endswith(".h"):
                    continue
                dep = base[:-2]
                if dep != mod and dep in mods:
                    edges[dep].append((path, number, '#include "%s"' % header))
        graph[mod] = dict(edges)
    return graph


def strongly_connected(graph):
    """Tarjan's algorithm, iterative: the list of components (sorted lists)."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                comps.append(sorted(comp))
    return comps


def shortest_path(graph, start, goal, allowed):
    """Shortest path start .. goal inside `allowed` (breadth first, names in
    sorted order so the answer is stable), as a list of modules."""
    previous = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while node is not None:
                path.append(node)
                node = previous[node]
            return path[::-1]
        for nxt in sorted(graph[node]):
            if nxt in allowed and nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return None


def cycles(graph):
    """Cycles (lists a, b, ..., a) that together use every edge lying on a
    cycle: for each such edge not yet shown, the edge plus the shortest way
    back. Breaking every edge they list removes every cycle."""
    found = []
    for comp in strongly_connected(graph):
        members = set(comp)
        if len(comp) == 1:
            continue  # self-includes are not edges, so one module is no cycle
        covered = set()
        for a in comp:
            for b in sorted(graph[a]):
                if b not in members or (a, b) in covered:
                    continue
                cycle = [a] + shortest_path(graph, b, a, members)
                covered.update(zip(cycle, cycle[1:]))
                found.append(cycle)
    return found


def normalize(cycle):
    """A cycle a, b, ..., a as a tuple rotated to start at its least name."""
    ring = cycle[:-1]
    k = ring.index(min(ring))
    return tuple(ring[k:] + ring[:k])


def layers(graph):
    """[[modules]]: layer 0 includes nothing; layer n includes something of
    layer n-1 and nothing higher. Only for a graph without cycles."""
    level = {}

    def depth(mod):
        if mod not in level:
            level[mod] = 1 + max((depth(d) for d in graph[mod]), default=-1)
        return level[mod]

    for mod in graph:
        depth(mod)
    out = [[] for _ in range(1 + max(level.values(), default=-1))]
    for mod in sorted(level):
        out[level[mod]].append(mod)
    return out


def relative(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def print_cycle(graph, cycle):
    print("cycle: " + " -> ".join(cycle))
    for a, b in zip(cycle, cycle[1:]):
        for path, number, text in graph[a][b]:
            print("    %s -> %s  %s:%d: %s" % (a, b, relative(path), number, text))


def print_layers(graph):
    print("layer order (each module includes only modules listed before it):")
    for n, mods in enumerate(layers(graph)):
        for mod in mods:
            deps = sorted(graph[mod])
            print("  %2d  %-12s -> %s" % (n, mod, " ".join(deps) if deps else "(nothing)"))


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=os.path.join(root, "src"))
    parser.add_argument("--include", default=os.path.join(root, "include"))
    parser.add_argument("--expect-cycle", nargs="?", const="", default=None,
                        metavar="CYCLE",
                        help='pass only when a cycle is found (that one, if given: "a -> b -> a")')
    args = parser.parse_args(argv)
    for d in (args.src, args.include):
        if not os.path.isdir(d):
            parser.error("not a directory: %s" % d)

    mods = modules(args.src, args.include)
    if not mods:
        parser.error("no modules in %s and %s" % (args.src, args.include))
    graph = include_graph(mods)
    found = cycles(graph)
    print("%d modules, %d include edges, from %s and %s"
          % (len(graph), sum(len(e) for e in graph.values()),
             relative(args.src), relative(args.include)))
    for path in unread(args.src, args.include):
        print("note: not read: %s" % relative(path))
    if found:
        comps = [c for c in strongly_connected(graph) if len(c) > 1]
        print("FAIL: the module include graph has %d cycle(s), in %d group(s) "
              "of mutually dependent modules:" % (len(found), len(comps)))
        for comp in comps:
            print("  {" + ", ".join(comp) + "}")
        for cycle in found:
            print_cycle(graph, cycle)
    else:
        print("OK: no cycle")
        print_layers(graph)

    if args.expect_cycle is None:
        return 1 if found else 0
    if not found:
        print("expected a cycle, found none")
        return 1
    if args.expect_cycle:
        want = [m.strip() for m in args.expect_cycle.split("->")]
        if len(want) < 3 or want[0] != want[-1]:
            parser.error('--expect-cycle wants "a -> b -> a", got %r' % args.expect_cycle)
        if normalize(want) not in {normalize(c) for c in found}:
            print("expected the cycle %s, not found" % args.expect_cycle)
            return 1
    print("as expected (--expect-cycle)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
