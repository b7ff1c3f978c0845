"""Block sizes and launch options for each template, chosen from the concrete sizes of a
launch. On Triton's interpreter every program and every op costs Python time, so the
choice there is the fewest, largest programs (see TRITON_NOTES.md); on a GPU it is a
conventional default until the autotuner picks better."""
from __future__ import annotations

INTERPRETER_MAX_BLOCK = 1 << 16


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def choose(rule: str, dims: dict, interpreted: bool) -> dict:
    """Constexprs (and num_warps/num_stages on a GPU) for a kernel of config family `rule`
    given its concrete extents `dims`."""
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
    if rule == "matmul":
        m, n, k = dims["m"], dims["n"], dims["k"]
        if interpreted:  # tiles of up to 64K elements; tall ones when N and K are small
            block_n, block_k = min(max(next_pow2(n), 16), 256), min(max(next_pow2(k), 16), 256)
            block_m = min(max(next_pow2(m), 16), INTERPRETER_MAX_BLOCK // max(block_n, block_k))
            return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3}
    raise ValueError(f"no config rule {rule!r}")
