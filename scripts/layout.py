#!/usr/bin/env python3
"""The house rules of src/, checked (run by scripts/test.sh):

- files are nodes; an import (`crate::a::b`, `use super::x`, an alias brought in by `use`) is an
  arrow; a parent module re-exporting its children is not, a child importing its parent is;
- a file's floor is 1 + the highest floor it imports; main.rs is on top;
- fails on an import circle, on more than MAX_FLOORS floors, or on a file with more than
  MAX_PRODUCT_LINES product lines (not blank, not a comment, not the trailing test module).

  scripts/layout.py [SRC_DIR] [-v]    # -v also prints every file's imports
"""
import os, re, sys, collections

MAX_FLOORS = 7
MAX_PRODUCT_LINES = 600

args = [a for a in sys.argv[1:] if not a.startswith('-')]
root = args[0] if args else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f); rel = os.path.relpath(p, root)[:-3]
            parts = rel.split('/')
            if parts[-1] == 'mod': parts = parts[:-1]
            if parts == ['lib']: parts = []
            files['::'.join(parts)] = p
def product(text):
    # strip #[cfg(test)] mod tests { ... } at the end (heuristic: from '#[cfg(test)]\nmod' to end)
    m = re.search(r'\n#\[cfg\(test\)\]\s*\nmod \w+ \{', text)
    return text[:m.start()] if m else text
edges = collections.defaultdict(set)
sizes = {}
for mod, p in files.items():
    if mod in ('main',): pass
    t = open(p).read(); pt = product(t)
    pt = '\n'.join(l for l in pt.splitlines() if not l.strip().startswith('//'))
    sizes[mod] = sum(1 for l in pt.splitlines() if l.strip() and not l.strip().startswith('//'))
    # resolve crate:: paths and super::
    for m in re.finditer(r'crate::((?:\w+::)*\w+)', pt):
        segs = m.group(1).split('::')
        best = None
        for i in range(len(segs), 0, -1):
            c = '::'.join(segs[:i])
            if c in files: best = c; break
        if best is not None and best != mod and best != '': edges[mod].add(best)
    for m in re.finditer(r'(?:scanfleet)::((?:\w+::)*\w+)', pt):
        segs = m.group(1).split('::')
        for i in range(len(segs), 0, -1):
            c = '::'.join(segs[:i])
            if c in files: edges[mod].add(c); break
    # module aliases brought in by `use crate::a::b;` / `use crate::a::{self, ..}` / `use super::b;`
    aliases = {}
    for m in re.finditer(r'use\s+(crate|scanfleet|super)::((?:\w+::)*\w+)(?:::\{([^}]*)\})?\s*;', pt):
        root, path, group = m.group(1), m.group(2), m.group(3)
        base = mod.split('::')[:-1] if root == 'super' else []
        full = '::'.join(base + path.split('::'))
        if group is None:
            aliases[path.split('::')[-1]] = full
        else:
            for g in group.split(','):
                g = g.strip()
                if g == 'self': aliases[path.split('::')[-1]] = full
                elif g: aliases[g.split(' as ')[-1].strip()] = full + '::' + g.split(' as ')[0].strip()
    for alias, full in aliases.items():
        if full not in files: continue
        for m in re.finditer(r'(?<![\w:])' + alias + r'::((?:\w+::)*\w+)', pt):
            segs = full.split('::') + m.group(1).split('::')
            for i in range(len(segs), 0, -1):
                c = '::'.join(segs[:i])
                if c in files and c != mod: edges[mod].add(c); break
    if re.search(r'use\s+super::\*', pt) and '::' in mod:
        parent = '::'.join(mod.split('::')[:-1])
        if parent in files: edges[mod].add(parent)
    for m in re.finditer(r'\bsuper::((?:\w+::)*\w+)', pt):
        base = mod.split('::')[:-1]
        segs = m.group(1).split('::')
        for i in range(len(segs), 0, -1):
            c = '::'.join(base + segs[:i])
            if c in files and c != mod: edges[mod].add(c); break
        else:
            if '::'.join(base) in files and base: edges[mod].add('::'.join(base))
# parent mod re-exporting children is not an upward import: drop edges parent->child
def is_child(a, b): return b.startswith(a + '::') if a else True
for a in list(edges):
    edges[a] = {b for b in edges[a] if not is_child(a, b) and b != ''}
# cycles via SCC
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        s = []
        while True:
            w = st.pop(); on.discard(w); s.append(w)
            if w == v: break
        sccs.append(s)
for v in files:
    if v not in idx: sc(v)
cyc = [s for s in sccs if len(s) > 1]
comp = {v: i for i, s in enumerate(sccs) for v in s}
floor = {}
def fl(v):
    if v in floor: return floor[v]
    floor[v] = 0
    floor[v] = 1 + max([fl(w) for w in edges[v] if comp[w] != comp[v]] + [0])
    return floor[v]
for v in files: fl(v)
by = collections.defaultdict(list)
for v, f in floor.items(): by[f].append(v or 'lib')
for f in sorted(by): print(f'floor {f}: ' + ', '.join(sorted(by[f])))
top = max(floor.values())
print('floors:', top)
print('cycles:', cyc)
print('largest (product lines):', sorted(((s, m) for m, s in sizes.items()), reverse=True)[:6])
if '-v' in sys.argv:
    for a in sorted(edges): print(a, '->', sorted(edges[a]))
problems = []
if cyc: problems.append(f'import circles: {cyc}')
if top > MAX_FLOORS: problems.append(f'{top} floors, more than {MAX_FLOORS}')
problems += [f'{files[m]}: {n} product lines, more than {MAX_PRODUCT_LINES}' for m, n in sizes.items() if n > MAX_PRODUCT_LINES]
for p in problems: print('layout:', p, file=sys.stderr)
sys.exit(1 if problems else 0)
