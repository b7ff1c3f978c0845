"""The seeded program generator: `generate(seed)` is the same Program for the same seed.

A program starts with one or two inputs (about half the programs give one of them the
symbolic dim N, called at two different sizes, 0 and 1 among them), then draws ops from the
catalog (each op equally likely, times its weight); an op's `propose` picks operands among
the values so far (recent ones more often) or makes new inputs and shared values of the
shapes it needs, adding steps that keep its domain legal. The values nothing reads become
the outputs (at most three, plus now and then an earlier value); most float shared values
get an update w - lr * grad, where the program's ops stay legal on the updated value (see
kgen.fuzz.program.updated_info).
"""
from __future__ import annotations

from kgen.fuzz.catalog import OPS, Gen
from kgen.fuzz.program import N, Illegal, Program, analyze, prune

SIZES = (0, 1, 2, 3, 4, 5, 7)
LEARNING_RATES = (0.125, 0.0625, 0.25, 0.5)


def generate(seed: int, max_steps: int = 8) -> Program:
    """A legal random program (checked by kgen.fuzz.program.analyze)."""
    for attempt in range(20):
        program = _draw(seed, attempt, max_steps)
        if program is not None:
            return program
    raise RuntimeError(f"no legal program for seed {seed}")  # never seen: a generator bug


def _draw(seed: int, attempt: int, max_steps: int):
    program = Program(seed=seed)
    g = Gen(seed * 1000 + attempt, program, [])
    rng = g.rng
    if rng.random() < 0.45:
        first = rng.choice(SIZES)
        program.sizes = [first, rng.choice([s for s in SIZES if s != first])]
    g.pool = rng.sample(range(1, 8), rng.randint(1, 3)) + ([0] if rng.random() < 0.08 else [])
    g.sizes.sizes = program.sizes

    for k in range(rng.randint(1, 2)):
        shape = list(g.shape(rng.randint(0 if k else 1, 3), allow_n=False))
        if program.sizes and k == 0:
            shape[rng.randrange(len(shape))] = N
        g.new_input(tuple(shape), rng.choice(["float", "float", "pos"]), shared=k > 0 and rng.random() < 0.5)

    ops = sorted(OPS)
    weights = [OPS[name].weight for name in ops]
    target = rng.randint(1, max_steps) if rng.random() < 0.3 else rng.randint(max(1, max_steps // 2), max_steps)
    for _ in range(12 * max_steps):
        if len(program.steps) >= target:
            break
        spec = OPS[rng.choices(ops, weights)[0]]
        try:
            spec.propose(g)
        except Illegal:
            pass  # a proposal that gave up keeps the legal steps (and inputs) it added
    if not program.steps:
        return None

    read = {name for step in program.steps for name in step["in"]}
    sinks = [s["name"] for s in program.steps if s["name"] not in read]
    outputs = [program.steps[-1]["name"]] + [s for s in reversed(sinks) if s != program.steps[-1]["name"]][:2]
    if rng.random() < 0.15:
        extra = rng.choice(program.value_names())
        outputs += [extra] if extra not in outputs else []
    program.outputs = outputs
    program.grads = rng.random() < 0.92
    if program.grads:  # an update is kept if the program stays legal on the updated value
        for s in program.shared:
            if s["dtype"] == "float32" and rng.random() < 0.7:
                program.updates.append([s["name"], rng.choice(LEARNING_RATES)])
                try:
                    analyze(program)
                except Illegal:
                    program.updates.pop()
    program = prune(program)
    try:
        analyze(program)
    except Illegal:
        return None
    return program
