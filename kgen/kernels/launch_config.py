"""What a launch config may hold: a kernel's constexprs (block sizes, positive powers of
two; flags, 0 or 1) and Triton's num_warps / num_stages. Checked wherever a config comes
from outside the config families: `Program.pin_config`, and every autotune cache entry."""
from __future__ import annotations

import re

LAUNCH_OPTIONS = {"num_warps": (1, 2, 4, 8, 16, 32), "num_stages": tuple(range(1, 9))}
FLAGS = ("HOLD_WEIGHTS",)  # constexprs that switch a code path on (1) or off (0), as a combo's part's too


def is_flag(name: str) -> bool:
    """Whether constexpr `name` (a combo's `p<i>_` prefix aside) is one of FLAGS."""
    return re.sub(r"^p\d+_", "", name) in FLAGS


def check_config(kernel, config) -> str:
    """What is wrong with `config` for `kernel` ("" if nothing): it must hold exactly the
    kernel's constexprs (positive powers of two) plus valid num_warps / num_stages."""
    if not isinstance(config, dict):
        return f"config: expected an object, got {type(config).__name__}"
    names = {p.name for p in kernel.params if p.kind == "constexpr"}
    missing, extra = names - set(config), set(config) - names - set(LAUNCH_OPTIONS)
    if missing or extra:
        return (f"config: expected the constexprs {sorted(names)} (and num_warps/num_stages), "
                f"got {sorted(config)}")
    for name, value in config.items():
        if is_flag(name):
            if value not in (0, 1) or isinstance(value, bool):
                return f"config: {name} must be 0 or 1, got {value!r}"
            continue
        allowed = LAUNCH_OPTIONS.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 \
                or (allowed and value not in allowed) or (not allowed and value & (value - 1)):
            want = f"one of {allowed}" if allowed else "a positive power of two"
            return f"config: {name} must be {want}, got {value!r}"
    return ""
