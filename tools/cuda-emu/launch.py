import re, sys
src = open(sys.argv[1]).read()
# Dynamic shared memory: `extern __shared__ [__align__(n)] T name[];` (at the
# start of a line) names the emulator's per-block allocation.
src = re.sub(r'^extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w[\w ]*?)\s+(\w+)\[\];',
             r'#define \2 ((\1 *)emu_dyn_smem)', src, flags=re.M)

# Static shared arrays: `__shared__ T name[...];` gets a call that poisons the
# array once per block (emu_shared_fresh).
src = re.sub(r'^(\s*__shared__\s+[\w ]+?\s+(\w+)(?:\[[^\]]*\])+;)',
             r'\1 emu_shared_fresh(\2, sizeof \2);', src, flags=re.M)

def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{': depth += 1
        elif ch in ')]}': depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip()); cur = ''
        else:
            cur += ch
    parts.append(cur.strip())
    return parts

out, i, n = [], 0, 0
# kernel<<< or kernel<template args><<<
pat = re.compile(r'(\w+(?:<[^<>]*>)?)<<<')
while True:
    m = pat.search(src, i)
    if not m:
        out.append(src[i:]); break
    out.append(src[i:m.start()])
    name = m.group(1)
    j = src.index('>>>', m.end())
    cfg = split_top(src[m.end():j])
    k = j + 3
    while src[k].isspace(): k += 1
    assert src[k] == '(', (name, src[k:k+20])
    depth, p = 0, k
    while True:
        c = src[p]
        if c == '(':
            depth += 1
        elif c == ')':
            depth -= 1
            if depth == 0: break
        p += 1
    args = src[k+1:p]
    smem = cfg[2] if len(cfg) > 2 else '0'
    out.append('emu_launch(%s, %s, %s, (const void *)%s, [&] { %s(%s); })' % (cfg[0], cfg[1], smem, name, name, args))
    i = p + 1
    n += 1
sys.stdout.write(''.join(out))
sys.stderr.write('%s: %d launches\n' % (sys.argv[1], n))
