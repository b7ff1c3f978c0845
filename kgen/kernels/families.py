"""The registry of kernel families: how the kernels of one template are configured.

A kernel's family is named by its `config_rule` (KernelSource.config_rule). Its record,
a `Family`, holds everything the rest of kgen knows about configuring such kernels, so that
a new template family is one record beside its template and nothing else:

    default    the untuned config at concrete extents: on Triton's interpreter, where every
               program and every op costs Python time, the fewest, largest programs (see
               TRITON_NOTES.md); on a GPU a conventional default until the autotuner picks
               better (kgen.kernels.launch.default_config)
    space      the candidate configs per tuning tier (kgen.autotune.space)
    resources  registers per thread and shared memory per block a config will use, estimated
               before compiling (kgen.autotune.costmodel.estimate_resources)
    steps      the loop steps one program takes (the cost model's latency and bytes in flight)
    gemm       whether its kernels are GEMMs: BLOCK_M x BLOCK_N output tiles over BLOCK_K
               steps, for which the cost model counts tile re-reads and dot efficiency
    elements   the elements of a program's largest block, when not the product of the
               config's blocks (a persistent scan's blocks are BLOCK_B rows of its widest value):
               the space prunes configs with more threads than elements
    rereads    bytes a launch reads again beyond each buffer once, from L2, for a family
               that is no GEMM (a persistent scan reads its loop-invariant weights each step)

Each template module registers its family next to its templates (`register`), as templates
register themselves in kgen.kernels.templates; importing kgen.kernels imports them all."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from kgen.errors import KgenError

INTERPRETER_MAX_BLOCK = 1 << 16  # elements of the largest block a default takes on the interpreter
TIERS = ("quick", "thorough")  # every family's space has both: a handful of candidates, or many
POW2 = tuple(1 << e for e in range(15))  # block sizes a thorough space draws from


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _one_step(dims: dict, config: dict) -> int:
    return 1


@dataclass(frozen=True)
class Family:
    """One kernel family's configuration. Config functions take the kernel's named extents
    at concrete sizes (`dims`, as KernelSource.dims names them)."""
    name: str  # the config_rule its template writes into its kernels
    # (dims, interpreted, half_dot) -> constexprs, plus num_warps / num_stages on a GPU; `half_dot`:
    # a GEMM whose dot takes 16-bit floats. None: kgen.kernels.launch joins a combo's parts' configs.
    default: Optional[Callable] = None
    # (dims, tier, default config) -> candidate configs, which kgen.autotune.space clamps to the
    # kernel's constexprs, dedupes and prunes by the target's limits. None: the default only.
    space: Optional[Callable] = None
    # (config, work) -> (registers wanted per thread, shared bytes per block); `work` is the
    # cost model's Work of the kernel (its loads, and its dot's kind and operand size).
    resources: Optional[Callable] = None
    steps: Callable = _one_step  # (dims, config) -> loop steps per program
    gemm: bool = False
    elements: Optional[Callable] = None  # (config, work) -> elements of a program's largest block
    rereads: Optional[Callable] = None  # (dims, config) -> bytes read again from L2 per launch


FAMILIES: dict = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"kernel family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def lookup(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KgenError(f"no kernel family {name!r}; families: {', '.join(sorted(FAMILIES))}") from None
