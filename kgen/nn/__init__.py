"""kgen.nn: layers, losses, optimizers and training loops on kgen's kernels.

Not built yet: the layers, the optimizers and the model zoo come with the fusion engine
(see DESIGN.md). Today, models are written with kgen.tensor / kgen.shared / kgen.function.
"""
__all__: list = []
