"""Keras's own names (kgen/nn/keras.py): the brief's Keras Sequential snippets train as
written with only the import line changed; channels-last layers against torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import nn
from kgen.nn.keras import (GRU, LSTM, SGD, Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Sequential,
                           to_categorical)

RNG = np.random.default_rng(0)


def test_the_keras_mlp_snippet_trains_as_written():
    x_train = RNG.standard_normal((64, 20)).astype(np.float32)
    y_train = to_categorical((x_train[:, :10].argmax(1)), num_classes=10)
    nn.manual_seed(0)
    model = Sequential()
    model.add(Dense(64, activation="relu", input_dim=20))
    model.add(Dropout(0.5))
    model.add(Dense(64, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(10, activation="softmax"))
    sgd = SGD(lr=0.05, momentum=0.9)
    model.compile(loss="categorical_crossentropy", optimizer=sgd, metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=4, batch_size=16, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    score = model.evaluate(x_train, y_train, batch_size=32, verbose=False)
    assert len(score) == 2 and 0.0 <= score[1] <= 1.0
    text = model.summary(print_fn=lambda _: None)
    assert "(None, 64)" in text and "(None, 10)" in text and "Total params: 6,154" in text, text
    assert "kgen launches per training step: " in text


def test_the_keras_cnn_snippet_trains_as_written():
    x_train = RNG.random((16, 12, 12, 1), dtype=np.float32)  # channels last, as Keras
    y_train = to_categorical(RNG.integers(0, 3, 16), 3)
    model = Sequential()
    model.add(Conv2D(8, kernel_size=(3, 3), activation="relu", input_shape=(12, 12, 1)))
    model.add(Conv2D(16, (3, 3), activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))
    model.add(Flatten())
    model.add(Dense(32, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(3, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=2, batch_size=8, verbose=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert model.shape == (3,) and model[2].output_shape((10, 10, 16)) == (5, 5, 16)
    assert model.predict(x_train[:4]).shape == (4, 3)


@pytest.mark.parametrize("padding, strides", [("valid", (1, 1)), ("same", (1, 1)), ("same", (2, 2))])
def test_conv2d_is_tensorflows_channels_last_convolution(padding, strides):
    layer = Conv2D(4, (3, 2), strides=strides, padding=padding, input_shape=(7, 6, 3))
    layer.build((7, 6, 3))
    x = kgen.tensor("x", ("N", 7, 6, 3))
    data = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    got = np.asarray(kgen.function([x], [layer(x)])(data)[0])
    kernel = torch.tensor(layer.state_dict()["kernel"]).permute(3, 2, 0, 1)  # [F, C, KH, KW]
    image = torch.tensor(data).permute(0, 3, 1, 2)
    if padding == "same":  # TensorFlow's: out = ceil(in / stride), the odd extra pixel at the end
        pads = []
        for size, k, s in zip((7, 6), (3, 2), strides):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        image = torch.nn.functional.pad(image, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    want = torch.nn.functional.conv2d(image, kernel, stride=strides).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape == (2, *layer.output_shape((7, 6, 3)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_recurrent_layers_take_batch_first_sequences():
    for layer_type in (LSTM, GRU):
        model = Sequential([layer_type(6, input_shape=(5, 3)), Dense(2)])
        assert model.shape == (2,)
        every = Sequential([layer_type(6, return_sequences=True, input_shape=(5, 3))])
        assert every.shape == (5, 6)
        x = kgen.tensor("x", ("N", 5, 3))
        assert model(x).shape[1:] == (2,) and every(x).shape[1:] == (5, 6)


def test_activation_and_bad_options():
    x = kgen.tensor("x", (2, 3))
    data = RNG.standard_normal((2, 3)).astype(np.float32)
    got = np.asarray(kgen.function([x], [Activation("tanh")(x)])(data)[0])
    np.testing.assert_allclose(got, np.tanh(data), rtol=1e-6)
    with pytest.raises(kgen.OptionError, match="activation must be one of"):
        Dense(3, activation="swishy")
    with pytest.raises(kgen.OptionError, match="padding must be 'valid' or 'same'"):
        Conv2D(3, 3, padding="full")
    with pytest.raises(kgen.OptionError, match="rate must be in"):
        Dropout(1.5)
    with pytest.raises(kgen.ShapeError, match="no input shape yet"):
        Sequential([Dense(3)]).summary()
    np.testing.assert_array_equal(to_categorical([2, 0], 3), [[0, 0, 1], [1, 0, 0]])


def test_flatten_of_channels_last_matches_keras_order():
    model = Sequential([Flatten(input_shape=(2, 2, 3))])
    x = kgen.tensor("x", ("N", 2, 2, 3))
    data = np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(np.asarray(kgen.function([x], [model(x)])(data)[0]), data.reshape(2, 12))
