#!/usr/bin/env python3
"""Independent reference implementation of Specs/random-streams.md
(stream layout version 1), written from the spec with plain Python integers.

    python3 Tests/interop/philox_reference.py

checks the Philox4x32-10 known-answer vectors and prints the golden values
asserted by Tests/DropoutRandomTests/PhiloxTests.swift. Exits non-zero if a
known-answer vector or a self-check fails. No third-party packages.
"""

import struct
import sys

LAYOUT_VERSION = 1
MASK32 = 0xFFFFFFFF

# --- Section 2: Philox4x32-10 ------------------------------------------------

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85


def philox(counter, key):
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return (c0, c1, c2, c3)


KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# --- Section 3: key and counters ---------------------------------------------

TAG_WEIGHT_INIT, TAG_SHUFFLE, TAG_DROPOUT, TAG_MONTE_CARLO = 1, 2, 3, 4


def key_of(seed):
    assert 0 <= seed < 2**64
    return (seed & MASK32, seed >> 32)


def check(value, bits, name):
    if not (0 <= value < 2**bits):
        raise ValueError(f"{name} {value} out of range 0 ..< 2^{bits}")
    return value


def high(tag, a):
    return (tag << 24) | check(a, 24, "A")


def row_word(seed, c1, c2, c3, u):
    """Section 3.6: word u of the row whose counter words 1..3 are c1, c2, c3."""
    check(u, 32, "unit")
    return philox((u >> 2, c1, c2, c3), key_of(seed))[u & 3]


def weight_row(layer, i):
    return (check(i, 32, "row"), check(layer, 8, "layer") << 24, high(TAG_WEIGHT_INIT, 0))


def dropout_row(epoch, step, layer, example):
    return (check(step, 32, "step"),
            (check(layer, 8, "layer") << 24) | check(example, 24, "example in batch"),
            high(TAG_DROPOUT, check(epoch, 24, "epoch")))


def monte_carlo_row(sample, example, layer):
    return (check(example, 32, "example"), check(layer, 8, "layer") << 24,
            high(TAG_MONTE_CARLO, check(sample, 24, "sample")))


# --- Section 4: Bernoulli ----------------------------------------------------

def threshold(p):
    p = float(p)
    if not (0.0 <= p <= 1.0):
        raise ValueError(p)
    return round(p * 2**32)  # exact product; round() on a float is half-to-even


def f32(x):
    """Round a Python float (binary64) to the nearest binary32, as a float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


# --- Section 5: dropout masks ------------------------------------------------

def is_kept(seed, epoch, step, layer, example, unit, p):
    return row_word(seed, *dropout_row(epoch, step, layer, example), unit) < threshold(p)


def mask_bits(seed, row, units, p):
    t = threshold(p)
    return [1 if row_word(seed, *row, u) < t else 0 for u in range(units)]


def bitset(bits):
    words = [0] * ((len(bits) + 63) // 64)
    for u, bit in enumerate(bits):
        words[u >> 6] |= bit << (u & 63)
    return words


# --- Section 6: uniforms and weight init -------------------------------------

def uniform01(w):
    return float(w >> 8) * 2.0**-24


def symmetric(w):
    return float((w >> 8) - 2**23) * 2.0**-23


def glorot_limit(fan_in, fan_out):
    n = f32(float(fan_in + fan_out))
    q = f32(6.0 / n)
    return f32(q ** 0.5)  # math.sqrt and ** 0.5 are both correctly rounded binary64


def init_uniform(seed, layer, i, j):
    return symmetric(row_word(seed, *weight_row(layer, i), j))


def init_weight(seed, layer, i, j, limit):
    return f32(init_uniform(seed, layer, i, j) * limit)


# --- Section 7: epoch shuffle ------------------------------------------------

def bounded(seed, epoch, k, s):
    assert 1 <= s < 2**32
    t = (2**32) % s
    r = 0
    while True:
        for w in philox((k, r, 0, high(TAG_SHUFFLE, epoch)), key_of(seed)):
            m = w * s
            if (m & MASK32) >= t:
                return m >> 32
        r += 1


def permutation(seed, epoch, n):
    check(epoch, 24, "epoch")
    check(n, 32, "n")
    a = list(range(n))
    for k in range(n - 1, 0, -1):
        j = bounded(seed, epoch, k, k + 1)
        a[k], a[j] = a[j], a[k]
    return a


def fnv1a64(values):
    """FNV-1a over the little-endian 8-byte encoding of each value (a checksum)."""
    h = 0xCBF29CE484222325
    for v in values:
        for byte in (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"):
            h ^= byte
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# --- Golden values -----------------------------------------------------------

def hexw(x):
    return f"0x{x:08X}"


def main():
    failures = 0
    for counter, key, expected in KAT:
        got = philox(counter, key)
        ok = got == expected
        failures += not ok
        print(f"KAT {' '.join(f'{c:08x}' for c in counter)} / {' '.join(f'{k:08x}' for k in key)}:"
              f" {' '.join(f'{x:08x}' for x in got)} {'ok' if ok else 'MISMATCH'}")

    seed = 0x0123456789ABCDEF
    print(f"\nstream layout version {LAYOUT_VERSION}; seed = 0x{seed:016X}, key = "
          f"({hexw(key_of(seed)[0])}, {hexw(key_of(seed)[1])})")

    print("\n# Thresholds T(p)")
    for p in (0.0, 0.2, 0.5, 0.8, f32(0.8), 1.0):
        print(f"T({p!r}) = {threshold(p)}")

    print("\n# Raw blocks of each purpose (all indices as below)")
    rows = {
        "weightInitRow(layer: 2, row: 5)": weight_row(2, 5),
        "dropoutRow(epoch: 3, step: 1234, layer: 1, example: 17)": dropout_row(3, 1234, 1, 17),
        "monteCarloRow(sample: 5, example: 9999, layer: 2)": monte_carlo_row(5, 9999, 2),
    }
    for name, (c1, c2, c3) in rows.items():
        block = philox((7, c1, c2, c3), key_of(seed))
        print(f"{name}: counter of block 7 = [7, {hexw(c1)}, {hexw(c2)}, {hexw(c3)}]"
              f" -> [{', '.join(hexw(x) for x in block)}]")

    print("\n# Dropout mask, seed above, epoch 3, step 1234, layer 1, example 17, p = 0.5")
    drow = dropout_row(3, 1234, 1, 17)
    bits = mask_bits(seed, drow, 64, 0.5)
    print(f"bitset of units 0..<64 = 0x{bitset(bits)[0]:016X}")
    bits1024 = mask_bits(seed, drow, 1024, 0.5)
    print(f"kept among units 0..<1024 = {sum(bits1024)}")
    print(f"isKept(..., unit: 4_000_000_000) = "
          f"{is_kept(seed, 3, 1234, 1, 17, 4000000000, 0.5)}")
    bits_p8 = mask_bits(seed, dropout_row(0, 0, 0, 0), 100, 0.8)
    print(f"epoch 0 step 0 layer 0 example 0, p = 0.8: kept among 0..<100 = {sum(bits_p8)},"
          f" bitset = [{', '.join(f'0x{w:016X}' for w in bitset(bits_p8))}]")

    print("\n# Monte-Carlo mask, seed above, sample 5, example 9999, layer 2, p = 0.5")
    mbits = mask_bits(seed, monte_carlo_row(5, 9999, 2), 64, 0.5)
    print(f"bitset of units 0..<64 = 0x{bitset(mbits)[0]:016X}")

    print("\n# Weight init, seed above")
    a = glorot_limit(784, 800)
    print(f"glorotUniformLimit(fanIn: 784, fanOut: 800) = {a!r} bits {hexw(f32_bits(a))}")
    a3 = glorot_limit(3, 1)
    print(f"glorotUniformLimit(fanIn: 3, fanOut: 1) = {a3!r} bits {hexw(f32_bits(a3))}")
    for (l, i, j) in ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 0, 4), (0, 799, 783), (2, 5, 30)):
        v = init_uniform(seed, l, i, j)
        w = init_weight(seed, l, i, j, a)
        print(f"layer {l} (i, j) = ({i}, {j}): v bits {hexw(f32_bits(v))} ({v!r}),"
              f" Glorot(784 -> 800) weight bits {hexw(f32_bits(w))} ({w!r})")
    lim = glorot_limit(100, 10)
    matrix = [f32_bits(init_weight(seed, 1, i, j, lim)) for i in range(10) for j in range(100)]
    print(f"glorotUniformInit(layer: 1, outputs: 10, inputs: 100): fnv1a64 of bit patterns = 0x{fnv1a64(matrix):016X}")

    print("\n# Epoch shuffle, seed 42")
    for e in (0, 1):
        print(f"epochPermutation(epoch: {e}, count: 10) = {permutation(42, e, 10)}")
    print(f"shuffleSwapIndex(epoch: 0, position: 59999) = {bounded(42, 0, 59999, 60000)}")
    print(f"shuffleSwapIndex(epoch: 7, position: 4294967294) = {bounded(42, 7, 2**32 - 2, 2**32 - 1)}")
    # Position 2^31 (s = 2^31 + 1) rejects about half the candidates: epoch 6 accepts
    # the third word, epoch 2 rejects the whole first block (attempt r = 1 is used).
    for e in (2, 6, 7):
        print(f"shuffleSwapIndex(epoch: {e}, position: 2^31) = {bounded(42, e, 2**31, 2**31 + 1)}")
    perm = permutation(42, 7, 1000)
    assert sorted(perm) == list(range(1000))
    print(f"epochPermutation(epoch: 7, count: 1000): fnv1a64 = 0x{fnv1a64(perm):016X}, first 8 = {perm[:8]}")

    if failures:
        print(f"\n{failures} known-answer vector(s) FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
