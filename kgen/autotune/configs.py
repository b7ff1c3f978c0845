"""Block sizes and launch options for each template, chosen from the concrete sizes of a
launch. On Triton's interpreter every program and every op costs Python time, so the
choice there is the fewest, largest programs (see TRITON_NOTES.md); on a GPU it is a
conventional default until the autotuner picks better.

GEMM defaults on a GPU depend on the dot. A float32 dot is exact (input_precision="ieee"):
FMA products, where each thread holds its whole BLOCK_K slice of both operand tiles in
registers, so its tiles are at most 64x64 with BLOCK_K 16. Larger ones spill: with Triton
3.9 for sm_90, cnn's conv at 128x64x32 on 4 warps spills 504 B per thread, and ptxas takes
three times as long to compile it as at 64x64x16, which spills nothing. A half-precision
dot runs on tensor cores from shared memory and takes the usual 32-deep K steps."""
from __future__ import annotations

INTERPRETER_MAX_BLOCK = 1 << 16


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def choose(rule: str, dims: dict, interpreted: bool, half_dot: bool = False) -> dict:
    """Constexprs (and num_warps/num_stages on a GPU) for a kernel of config family `rule`
    given its concrete extents `dims`; `half_dot`: a GEMM whose dot takes 16-bit floats."""
    if rule == "pointwise":
        x = dims["x"]
        if interpreted:
            return {"XBLOCK": min(next_pow2(x), INTERPRETER_MAX_BLOCK)}
        return {"XBLOCK": min(max(next_pow2(x), 128), 1024), "num_warps": 4}
    if rule == "reduction":
        x, r = dims["x"], dims["r"]
        if interpreted:
            rblock = min(next_pow2(r), 4096)
            return {"RBLOCK": rblock, "XBLOCK": min(next_pow2(x), max(1, INTERPRETER_MAX_BLOCK // rblock))}
        rblock = min(next_pow2(r), 1024)
        return {"RBLOCK": rblock, "XBLOCK": max(1, min(next_pow2(x), 4096 // rblock)), "num_warps": 4}
    if rule == "rows":  # a row kernel (kgen.kernels.reduction.emit_rows): RBLOCK holds a whole row
        x, rblock = dims["x"], next_pow2(dims["r"])
        if interpreted:
            return {"RBLOCK": rblock, "XBLOCK": min(next_pow2(x), max(1, INTERPRETER_MAX_BLOCK // rblock))}
        return {"RBLOCK": rblock, "XBLOCK": max(1, min(next_pow2(x), 2048 // rblock)), "num_warps": 4}
    if rule == "matmul_rows":  # a matmul whose epilogue holds whole rows (fusion rule E5)
        config = choose("matmul", dims, interpreted, half_dot)
        config["BLOCK_N"] = max(next_pow2(dims["n"]), 16)
        if interpreted:
            config["BLOCK_M"] = min(config["BLOCK_M"], max(16, INTERPRETER_MAX_BLOCK // max(config["BLOCK_N"], config["BLOCK_K"])))
        return config
    if rule == "matmul":
        m, n, k = dims["m"], dims["n"], dims["k"]
        if interpreted:  # tiles of up to 64K elements; tall ones when N and K are small
            block_n, block_k = min(max(next_pow2(n), 16), 256), min(max(next_pow2(k), 16), 256)
            block_m = min(max(next_pow2(m), 16), INTERPRETER_MAX_BLOCK // max(block_n, block_k))
            return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32 if half_dot else 16, "num_warps": 4, "num_stages": 3}
    if rule == "conv":  # implicit GEMMs (kgen.kernels.conv): extents m x n over k
        m, n, k = dims["m"], dims["n"], dims["k"]
        if interpreted:
            return interpreted_gemm_tiles(m, n, k)
        if not half_dot:
            return {"BLOCK_M": min(max(next_pow2(m), 16), 64), "BLOCK_N": min(max(next_pow2(n), 16), 64),
                    "BLOCK_K": 16, "num_warps": 4, "num_stages": 3}
        return {"BLOCK_M": min(max(next_pow2(m), 16), 128 if n <= 64 else 64),
                "BLOCK_N": min(max(next_pow2(n), 16), 128), "BLOCK_K": min(max(next_pow2(k), 16), 32),
                "num_warps": 4, "num_stages": 3}
    if rule == "pool":  # one lane per element written, a window of loads each (kgen.kernels.pool)
        x = dims["x"]
        if interpreted:
            return {"XBLOCK": min(next_pow2(x), INTERPRETER_MAX_BLOCK)}
        return {"XBLOCK": min(max(next_pow2(x), 128), 512), "num_warps": 4}
    raise ValueError(f"no config rule {rule!r}")


GROUP_M = 8  # row tiles a GEMM walks together (kgen.kernels.matmul.emit_tile_ids), Triton's usual
SPLIT_PROGRAMS = 256  # split-K's default aims at this many programs (two waves of an H100's 132 SMs)
SPLIT_MIN_STEPS = 8  # ... with at least this many BLOCK_K steps per slice


def split_k(dims: dict, config: dict, interpreted: bool) -> int:
    """SPLIT_K for a GEMM that may split its K (kgen.kernels.splitk) with tiles `config`:
    on the interpreter 1 (the fewest programs); on a GPU, slices enough to give the GPU
    SPLIT_PROGRAMS programs, each at least SPLIT_MIN_STEPS K steps long, within the
    workspace's bound (a power of two)."""
    from kgen.kernels.splitk import max_split  # (here: importing kgen.kernels imports this module)
    if interpreted:
        return 1
    m, n, k = dims["m"], dims["n"], dims["k"]
    tiles = -(-m // config["BLOCK_M"]) * -(-n // config["BLOCK_N"])
    wanted = next_pow2(-(-SPLIT_PROGRAMS // tiles))
    longest = max(1, k // (config["BLOCK_K"] * SPLIT_MIN_STEPS))
    return max(1, min(wanted, 1 << (longest.bit_length() - 1), max_split(m, n)))


def interpreted_gemm_tiles(m: int, n: int, k: int) -> dict:
    """GEMM tiles for the interpreter: the fewest program x K-step iterations, no tile (or
    gathered index block) over INTERPRETER_MAX_BLOCK elements; ties go to smaller tiles."""
    def sizes(extent):
        top = min(max(next_pow2(extent), 16), INTERPRETER_MAX_BLOCK // 16)
        return [1 << e for e in range(4, top.bit_length())]

    def cost(bm, bn, bk):
        steps = -(-m // bm) * -(-n // bn) * -(-k // bk)
        return steps, bm * bn + bm * bk + bk * bn

    fits = [(bm, bn, bk) for bm in sizes(m) for bn in sizes(n) for bk in sizes(k)
            if max(bm * bn, bm * bk, bk * bn) <= INTERPRETER_MAX_BLOCK]
    bm, bn, bk = min(fits, key=lambda t: cost(*t))
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}
