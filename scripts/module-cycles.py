#!/usr/bin/env python3
"""Fails when modules inside a crate depend on each other in a circle.

    scripts/module-cycles.py [CRATE_DIR ...]     (default: every workspace member)
    scripts/module-cycles.py --self-test         (shows it a cycle, which it must find)

The rule, at every level of each crate's module tree: the modules that share a parent may
use each other only one way. A module using its own parent's items, or its own children, is
not an edge (that is how Rust nests code); `a::x` using `b::y` is an edge a -> b between the
siblings a and b, wherever in their subtrees x and y sit. Test modules count: a test that
needs a sibling module is a dependency like any other.

A reference is any path that starts at `crate::` or `super::` (in `use` lists and inline),
resolved through `pub use` re-exports, so `crate::Engine` re-exported from `engine` counts
as a use of `engine`. Paths in comments and strings are ignored. Each binary target
(src/main.rs, src/bin/*.rs) is its own crate with its own tree.

This is the check `cargo modules dependencies --acyclic` makes, without building
rust-analyzer in CI.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|[{}();,*]|\S")


def strip_comments_and_strings(text):
    """Replaces comments, strings and char literals by spaces, keeping braces balanced."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append(' "" ')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append(' "" ')
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a): only literals close.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                i += len(m.group(0))
                out.append(" ' ")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_use_tree(tokens, i, prefix, out):
    """Parses a use tree at tokens[i:] after `prefix`; appends full paths; returns end index."""
    path = list(prefix)
    while i < len(tokens):
        t = tokens[i]
        if t == "{":
            i += 1
            while i < len(tokens) and tokens[i] != "}":
                i = parse_use_tree(tokens, i, path, out)
                if i < len(tokens) and tokens[i] == ",":
                    i += 1
            return i + 1
        if t in (";", ",", "}"):
            out.append((path, None))
            return i
        if t == "::":
            i += 1
            continue
        if t == "as":
            out.append((path, tokens[i + 1]))
            return i + 2
        if t == "*":
            out.append((path + ["*"], None))
            return i + 1
        path = path + [t]
        i += 1
    out.append((path, None))
    return i


class Module:
    def __init__(self, path):
        self.path = tuple(path)
        self.refs = []  # paths (tuples) this module's code names, resolved to crate-absolute
        self.reexports = {}  # name -> crate-absolute path of what `pub use` brings in


def resolve(modpath, path):
    """Turns a path written in module `modpath` into a crate-absolute one, or None."""
    if not path:
        return None
    if path[0] == "crate":
        return tuple(path[1:])
    if path[0] in ("super", "self"):
        base = list(modpath)
        rest = list(path)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                if not base:
                    return None
                base.pop()
            rest.pop(0)
        return tuple(base + rest)
    return None


def scan_file(file, modpath, modules, children_files):
    """Reads one source file into `modules`, following `mod x;` declarations."""
    tokens = TOKEN.findall(strip_comments_and_strings(file.read_text()))
    stack = [(list(modpath), 0)]  # (module path, brace depth at which it opened)
    depth = 0
    modules.setdefault(tuple(modpath), Module(modpath))
    i = 0
    while i < len(tokens):
        t = tokens[i]
        cur = stack[-1][0]
        if t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
            if len(stack) > 1 and depth == stack[-1][1]:
                stack.pop()
        elif t == "mod" and i + 2 < len(tokens) and re.match(r"\w+$", tokens[i + 1]):
            name = tokens[i + 1]
            if tokens[i + 2] == "{":
                inner = cur + [name]
                modules.setdefault(tuple(inner), Module(inner))
                stack.append((inner, depth))
                depth += 1
                i += 3
                continue
            if tokens[i + 2] == ";":
                children_files.append((file, cur, name))
        elif t == "use":
            public = i > 0 and tokens[i - 1] == "pub" or (i > 3 and tokens[i - 1] == ")" and tokens[i - 4] == "pub")
            uses = []
            i = parse_use_tree(tokens, i + 1, [], uses)
            for path, alias in uses:
                absolute = resolve(cur, path) if path and path[0] in ("crate", "super", "self") else None
                if absolute is None and path and not path[0][0].isupper() and len(path) > 1:
                    # `use child::x` names the module's own child (or an external crate, which
                    # resolves to no module of this crate and is dropped later).
                    maybe = tuple(cur) + tuple(path)
                    if path[0] not in ("std", "core", "alloc"):
                        modules[tuple(cur)].refs.append(("maybe", maybe))
                        if public and maybe[-1] != "*":
                            modules[tuple(cur)].reexports[alias or maybe[-1]] = maybe
                if absolute is None:
                    continue
                modules[tuple(cur)].refs.append(("use", absolute))
                if public and absolute and absolute[-1] != "*":
                    modules[tuple(cur)].reexports[alias or absolute[-1]] = absolute
            continue
        elif t in ("crate", "super") and i + 1 < len(tokens) and tokens[i + 1] == "::" and (i == 0 or tokens[i - 1] != "::"):
            path = [t]
            j = i + 1
            while j + 1 < len(tokens) and tokens[j] == "::" and re.match(r"\w+$", tokens[j + 1]):
                path.append(tokens[j + 1])
                j += 2
            absolute = resolve(cur, path)
            if absolute is not None:
                modules[tuple(cur)].refs.append(("path", absolute))
            i = j
            continue
        i += 1


def load_tree(root_file):
    modules, pending = {}, []
    scan_file(root_file, [], modules, pending)
    while pending:
        parent_file, parent_mod, name = pending.pop()
        directory = parent_file.parent
        if parent_file.name not in ("mod.rs", "lib.rs", "main.rs"):
            directory = directory / parent_file.stem
        for candidate in (directory / f"{name}.rs", directory / name / "mod.rs"):
            if candidate.exists():
                scan_file(candidate, parent_mod + [name], modules, pending)
                break
        else:
            sys.exit(f"module-cycles: cannot find the file of mod {name} declared in {parent_file}")
    return modules


def module_of(modules, path):
    """The deepest module that `path` names or sits in, after following re-exports."""
    for _ in range(16):
        best = ()
        for k in range(len(path), -1, -1):
            if tuple(path[:k]) in modules:
                best = tuple(path[:k])
                break
        rest = path[len(best):]
        if rest and rest[0] in modules[best].reexports:
            path = modules[best].reexports[rest[0]] + tuple(rest[1:])
            continue
        return best
    return best


def edges_of(modules):
    edges = set()
    for source, module in modules.items():
        for kind, target_path in module.refs:
            target = module_of(modules, target_path)
            if kind == "maybe" and len(target) <= len(source):
                continue  # `use x::y` that was not a child module (an external crate)
            k = 0
            while k < min(len(source), len(target)) and source[k] == target[k]:
                k += 1
            if k == len(source) or k == len(target):
                continue  # ancestor or descendant: nesting, not a dependency
            edges.add((source[: k + 1], target[: k + 1]))
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def crate_roots(crate_dir):
    src = crate_dir / "src"
    roots = [p for p in (src / "lib.rs", src / "main.rs") if p.exists()]
    roots += sorted((src / "bin").glob("*.rs")) if (src / "bin").is_dir() else []
    return roots


def self_test():
    """The check finds a cycle it is shown, and passes the same crate without it."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "src"
        (src / "b").mkdir(parents=True)
        (src / "lib.rs").write_text("pub mod a;\npub mod b;\npub use a::Thing;\n")
        (src / "a.rs").write_text("use crate::b::helper; // crate::c in a comment\npub struct Thing;\n")
        (src / "b" / "mod.rs").write_text("mod inner;\npub fn helper() {}\n")
        (src / "b" / "inner.rs").write_text('fn f() -> &str { let _ = crate::Thing; "crate::a" }\n')
        found = cycles(edges_of(load_tree(src / "lib.rs")))
        assert found == [[("a",), ("b",)]], found
        (src / "b" / "inner.rs").write_text('fn f() -> &str { "crate::Thing" }\n')
        found = cycles(edges_of(load_tree(src / "lib.rs")))
        assert found == [], found
    print("module-cycles: self-test passed (a cycle through a re-export and a child module found)")


def main(argv):
    if argv == ["--self-test"]:
        self_test()
        return 0
    if argv:
        crates = [pathlib.Path(a) for a in argv]
    else:
        members = re.search(r"members\s*=\s*\[([^\]]*)\]", (ROOT / "Cargo.toml").read_text()).group(1)
        crates = [ROOT / m for m in re.findall(r'"([^"]+)"', members)]
    failed = False
    for crate in crates:
        for root in crate_roots(crate):
            modules = load_tree(root)
            edges = edges_of(modules)
            name = f"{crate.name}/{root.relative_to(crate)}"
            found = cycles(edges)
            for component in found:
                failed = True
                names = ["::".join(m) for m in component]
                print(f"{name}: modules in a cycle: {', '.join(names)}")
                for a, b in sorted(edges):
                    if a in component and b in component:
                        print(f"    {'::'.join(a)} -> {'::'.join(b)}")
            if not found:
                print(f"{name}: {len(modules)} modules, {len(edges)} dependencies between siblings, no cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
