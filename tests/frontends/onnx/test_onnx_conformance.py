"""ONNX's own conformance runner (`onnx.backend.test.BackendTest`) examining kgen on a fixed,
representative subset of its node cases: each case's model through `from_onnx` and the
generated kernels (Triton's interpreter here), compared by onnx's runner at the suite's
tolerances. `benchmarks/onnx_conformance.py` runs the whole selection; its results are in
benchmarks/results/*-onnx.json."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("onnx")
import onnx.backend.test  # noqa: E402

from kgen.frontends.onnx.backend import KgenBackend  # noqa: E402

# One or a few cases per op family and attribute form, so a regression in any shows here;
# the full run is the benchmark's.
CASES = """
test_abs test_add_bcast test_sub test_mul_bcast test_div test_pow_bcast_array test_neg test_exp test_log test_sqrt
test_tanh test_sigmoid test_relu test_leakyrelu test_elu_default test_softplus test_erf test_clip_splitbounds
test_max_two_inputs test_min_one_input test_where_example test_cast_FLOAT_to_FLOAT16 test_identity
test_constant test_reduce_sum_keepdims_example test_reduce_mean_do_not_keepdims_random
test_reduce_max_negative_axes_keepdims_example test_matmul_3d test_gemm_all_attributes test_softmax_axis_0
test_logsoftmax_negative_axis test_dropout_default test_reshape_negative_extended_dims test_flatten_axis2
test_transpose_all_permutations_3 test_squeeze_negative_axes test_unsqueeze_two_axes test_expand_dim_changed
test_concat_3d_axis_negative_1 test_split_variable_parts_2d_opset18 test_slice_neg_steps test_constant_pad
test_reflect_pad test_edge_pad test_gather_negative_indices test_basic_conv_with_padding
test_conv_with_autopad_same test_conv_with_strides_and_asymmetric_padding test_maxpool_2d_ceil
test_maxpool_1d_default test_maxpool_2d_dilations test_averagepool_2d_pads_count_include_pad
test_averagepool_2d_same_lower test_globalaveragepool test_batchnorm_epsilon test_layer_normalization_2d_axis1
test_lstm_defaults test_gru_with_initial_bias test_softmax_example_expanded
""".split()



def test_every_listed_case_is_in_the_suite():
    from kgen.frontends.onnx.conformance import load_cases
    assert not set(CASES) - {case.name for case in load_cases("node")}


backend_test = onnx.backend.test.BackendTest(KgenBackend, __name__)
for name in CASES:
    backend_test.include(rf"^{re.escape(name)}_cpu$")
test_classes = backend_test.test_cases  # (a property that builds new classes each time)
for case_class in test_classes.values():  # keep the chosen cases, not thousands of skips
    for attribute in [a for a in vars(case_class) if a.startswith("test_") and a[:-len("_cpu")] not in CASES]:
        delattr(case_class, attribute)
globals().update(test_classes)
