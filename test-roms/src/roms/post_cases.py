#!/usr/bin/env python3
"""Writes post_cases.inc: the ALU cases the `post` ROM runs in real mode, protected mode and v86 mode,
and that test-roms/tests/post.rs runs natively on the host CPU for a byte-exact comparison.

Run it from this directory after changing the lists below; the .inc is committed (the build needs no
Python). Each case is `CASE {instruction}, eax, ebx, ecx, edx, eflags` (inputs; the instruction may read
and write only EAX, EBX, ECX and EDX; eflags holds only arithmetic flags). Operand values come from a
fixed edge list plus a seeded generator, so the file is the same on every run.
"""

EDGE8 = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0F, 0x99]
EDGE16 = [0x0000, 0x0001, 0x7FFF, 0x8000, 0xFFFF, 0x00FF, 0x1234]
EDGE32 = [0x00000000, 0x00000001, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x0000FFFF, 0x12345678]

state = 0x2545F491


def rnd():
    """xorshift32: deterministic pseudo-random dwords."""
    global state
    x = state
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    state = x
    return x


FLAGSETS = [0x000, 0x8D5, 0x001, 0x010]  # none, all arithmetic, CF, AF

cases = []


def case(insn, a, b, c=0, d=0, fl=0):
    cases.append((insn, a & 0xFFFFFFFF, b & 0xFFFFFFFF, c & 0xFFFFFFFF, d & 0xFFFFFFFF, fl))


def pairs(edge, n):
    out = [(edge[i], edge[(i * 3 + 1) % len(edge)]) for i in range(len(edge))]
    for _ in range(n):
        out.append((rnd(), rnd()))
    return out


REGS = {8: ("al", "bl"), 16: ("ax", "bx"), 32: ("eax", "ebx")}
EDGES = {8: EDGE8, 16: EDGE16, 32: EDGE32}

# Two-operand ALU, each size, flags in varied (ADC/SBB read CF).
for op in ["add", "adc", "sub", "sbb", "and", "or", "xor", "cmp", "test"]:
    n = 5 if op in ("add", "adc", "sub", "sbb") else 3
    for size in (8, 16, 32):
        dst, src = REGS[size]
        for i, (a, b) in enumerate(pairs(EDGES[size], 1)[-n:]):
            case(f"{op} {dst}, {src}", a, b, fl=FLAGSETS[i % 4])

# One-operand ALU.
for op in ["inc", "dec", "neg", "not"]:
    for size in (8, 16, 32):
        dst, _ = REGS[size]
        for i, a in enumerate(EDGES[size][1:5]):
            case(f"{op} {dst}", a, 0, fl=FLAGSETS[i % 4])

# Shifts and rotates by CL (counts 0, 1, within, size, beyond, masked) and by 1.
for op in ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"]:
    for size in (8, 16, 32):
        dst, _ = REGS[size]
        for i, cnt in enumerate([0, 1, size - 1, size + 1, 33]):
            a = EDGES[size][i % len(EDGES[size])] ^ (rnd() & ((1 << size) - 1))
            case(f"{op} {dst}, cl", a, 0, c=cnt, fl=FLAGSETS[i % 4])
        if size != 16:
            case(f"{op} {dst}, 1", EDGES[size][3], 0, fl=0x001)

# Double shifts.
for op in ["shld", "shrd"]:
    for size in (16, 32):
        dst, src = REGS[size]
        for i, cnt in enumerate([0, 1, size - 1, 31]):
            case(f"{op} {dst}, {src}, cl", rnd(), rnd(), c=cnt, fl=FLAGSETS[i % 4])

# Multiplication and division (divisors chosen so nothing faults).
for size in (8, 16, 32):
    _, src = REGS[size]
    for a, b in pairs(EDGES[size], 1)[-4:]:
        case(f"mul {src}", a, b, d=rnd())
        case(f"imul {src}", a, b, d=rnd())
for size in (16, 32):
    dst, src = REGS[size]
    for a, b in pairs(EDGES[size], 1)[-4:]:
        case(f"imul {dst}, {src}", a, b)
        case(f"imul {dst}, {src}, 0x{(b * 7) & 0x7F:x}", a, b)
for a, b in [(1000, 7), (0xFEFF, 0xFF), (0x7F00, 0x80), (300, 3)]:
    case("div bl", a, b)
for a, b in [(-700 & 0xFFFF, 7), (0x3F00, 0x7F), (-200 & 0xFFFF, -3 & 0xFF)]:
    case("idiv bl", a, b)
for hi, lo, b in [(0, 0x12345678, 0x1234), (0x1233, 0xFFFFFFFF, 0x1234), (0, 0xFFFF, 1)]:
    case("div bx", lo, b, d=hi)
    case("div ebx", lo, b, d=hi)
for lo, hi, b in [(0xFFFFFF00, 0xFFFFFFFF, 7), (0x10000, 0, 0xFFFFFFFD)]:
    case("idiv ebx", lo, b, d=hi)

# BCD adjustments (32-bit code here; legal in every mode the ROM runs).
for op in ["daa", "das", "aaa", "aas"]:
    for i, a in enumerate([0x09, 0x0A, 0x99, 0x9A, 0xFA]):
        case(op, a | (rnd() & 0xFF00), 0, fl=FLAGSETS[i % 4])
for a in [0x00, 0x45, 0xFF]:
    case("aam", a, 0)
    case("aam 7", a, 0)
    case("aad", a | 0x0300, 0)
    case("aad 7", a | 0x0900, 0)

# Bit scans, tests and byte swaps.
for size in (16, 32):
    dst, src = REGS[size]
    for b in [0, 0x80, EDGES[size][3], rnd()]:
        case(f"bsf {dst}, {src}", 0x5A5A5A5A, b, fl=0x8D5)
        case(f"bsr {dst}, {src}", 0x5A5A5A5A, b)
    for op in ["bt", "bts", "btr", "btc"]:
        for bit in [5, size - 1, size + 3]:
            case(f"{op} {dst}, {'cx' if size == 16 else 'ecx'}", rnd(), 0, c=bit)
case("bswap eax", 0x12345678, 0)
case("bswap ebx", 0, 0x80FF0001)

# Exchanges, compare-exchange, sign and zero extension, conversions, flags to AH.
case("xadd eax, ebx", 0x7FFFFFFF, 1)
case("xadd bl, al", 0x80, 0x80)
case("cmpxchg ebx, ecx", 5, 5, c=9)
case("cmpxchg ebx, ecx", 5, 6, c=9)
case("cmpxchg bx, cx", 0x8000, 0x8000, c=1)
for v in [0x7F, 0x80, 0xFF80]:
    case("movsx eax, bl", 0, v)
    case("movzx eax, bx", 0, v | 0xFFFF0000)
    case("movsx ax, bl", 0xFFFFFFFF, v)
    case("cbw", v, 0)
    case("cwde", v | 0x8000, 0)
    case("cwd", v << 8, 0)
    case("cdq", v << 24, 0)
for fl in FLAGSETS:
    case("lahf", 0, 0, fl=fl)
    case("sahf", 0xD500 ^ (fl << 8), 0, fl=fl)
case("xchg eax, ebx", 1, 2)
case("xchg al, bh", 0x11, 0x2233)

with open("post_cases.inc", "w") as f:
    f.write("; Generated by post_cases.py; do not edit (change the script and run it again).\n")
    f.write(f"; {len(cases)} cases: CASE {{instruction}}, eax, ebx, ecx, edx, eflags\n")
    for insn, a, b, c, d, fl in cases:
        f.write(f"        CASE {{{insn}}}, 0x{a:08X}, 0x{b:08X}, 0x{c:08X}, 0x{d:08X}, 0x{fl:03X}\n")
print(len(cases), "cases")
